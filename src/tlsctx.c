/*
 * tlsctx: client-side TLS contexts (see the header).
 */
#include "predcache/tlsctx.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

static int empty(const char *s)
{
    return s == NULL || s[0] == '\0';
}

/* The oldest queued OpenSSL error as text (the queue is cleared); returns it. */
static unsigned long ssl_error(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e == 0) {
        snprintf(buf, len, "unknown error");
        return 0;
    }
    ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return e;
}

SSL_CTX *pc_tls_client_ctx(const struct pc_tls_opts *o, char *err, size_t errlen)
{
    char why[256];
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        ssl_error(why, sizeof why);
        snprintf(err, errlen, "cannot create a TLS context: %s", why);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (o->verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        int ok = empty(o->ca_file) ? SSL_CTX_set_default_verify_paths(ctx)
                                   : SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL);
        if (!ok) {
            ssl_error(why, sizeof why);
            snprintf(err, errlen, "tls_ca_file: cannot load '%s': %s",
                     empty(o->ca_file) ? "(system CAs)" : o->ca_file, why);
            goto fail;
        }
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (empty(o->cert_file) != empty(o->key_file)) {
        snprintf(err, errlen, "tls_cert_file and tls_key_file go together (mutual TLS)");
        goto fail;
    }
    if (!empty(o->cert_file)) {
        if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1) {
            ssl_error(why, sizeof why);
            snprintf(err, errlen, "tls_cert_file: cannot load '%s': %s", o->cert_file, why);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1) {
            unsigned long e = ssl_error(why, sizeof why);
            if (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
                snprintf(err, errlen, "tls_key_file '%s' does not match tls_cert_file '%s'",
                         o->key_file, o->cert_file);
            else
                snprintf(err, errlen, "tls_key_file: cannot load '%s': %s", o->key_file, why);
            goto fail;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            ssl_error(why, sizeof why);
            snprintf(err, errlen, "tls_key_file '%s' does not match tls_cert_file '%s': %s",
                     o->key_file, o->cert_file, why);
            goto fail;
        }
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL *pc_tls_client_ssl(SSL_CTX *ctx, const struct pc_tls_opts *o, const char *host)
{
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL)
        return NULL;
    const char *name = empty(o->server_name) ? host : o->server_name;
    unsigned char addr[16];
    int is_ip = inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
    /* SNI carries names only, never addresses (RFC 6066, 3). */
    if (!is_ip && SSL_set_tlsext_host_name(ssl, name) != 1)
        goto fail;
    if (o->verify) {
        X509_VERIFY_PARAM *p = SSL_get0_param(ssl);
        X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if ((is_ip ? X509_VERIFY_PARAM_set1_ip_asc(p, name) : SSL_set1_host(ssl, name)) != 1)
            goto fail;
    }
    return ssl;
fail:
    SSL_free(ssl);
    return NULL;
}

void pc_tls_failure(SSL *ssl, unsigned long err, char *buf, size_t len)
{
    long v = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (v != X509_V_OK) {
        snprintf(buf, len, "certificate verify failed: %s", X509_verify_cert_error_string(v));
        ERR_clear_error();
        return;
    }
    if (err != 0) {
        ERR_error_string_n(err, buf, len);
        ERR_clear_error();
        return;
    }
    ssl_error(buf, len);
}
