/*
 * tlsctx: client-side TLS contexts (OpenSSL) for predcache's own connections to Redis.
 * Owns the reading of [redis] tls_* options into an SSL_CTX and the wording of TLS
 * failures; never touches a socket. The store (store.c) makes one SSL per connection from
 * the context, and says why a handshake failed with pc_tls_failure.
 */
#ifndef PREDCACHE_TLSCTX_H
#define PREDCACHE_TLSCTX_H

#include <stddef.h>

#include <openssl/ssl.h>

struct pc_tls_opts {
    const char *ca_file;     /* "" or NULL: the system's trusted CAs */
    const char *cert_file;   /* client certificate (chain, PEM) for mutual TLS; "" none */
    const char *key_file;    /* its private key (PEM); "" none */
    const char *server_name; /* name checked in the server's certificate and sent as SNI */
    int verify;              /* 0: the server's certificate is not checked */
};

/* A context for these options, with every file read now (so that a wrong path or a key
 * that does not match its certificate is known at start and by --check). NULL with a
 * message naming the option and the file in err. */
SSL_CTX *pc_tls_client_ctx(const struct pc_tls_opts *o, char *err, size_t errlen);

/* A new SSL for one connection to host (the name to check and send when server_name is
 * empty; an IP address is checked against the certificate's IP entries). NULL on failure. */
SSL *pc_tls_client_ssl(SSL_CTX *ctx, const struct pc_tls_opts *o, const char *host);

/* Why the handshake or the connection of ssl failed, into buf: the certificate
 * verification result when it failed, else the OpenSSL error (err, or the queue's). */
void pc_tls_failure(SSL *ssl, unsigned long err, char *buf, size_t len);

#endif
