/*
 * grpckey: the key material of cached gRPC calls (see the header).
 */
#include "predcache/grpckey.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "grpc_predict_v2.pb-c.h"
#include "tensorflow_serving/apis/classification.pb-c.h"
#include "tensorflow_serving/apis/get_model_status.pb-c.h"
#include "tensorflow_serving/apis/predict.pb-c.h"
#include "tensorflow_serving/apis/regression.pb-c.h"

#define WIRE_DEPTH 64 /* nesting at most; deeper messages are keyed as sent */

static const struct {
    const char *path;
    enum pc_grpc_kind kind;
    const ProtobufCMessageDescriptor *req;
} methods[] = {
    {"/tensorflow.serving.PredictionService/Predict", PC_GRPC_TFS_PREDICT,
     &tensorflow__serving__predict_request__descriptor},
    {"/tensorflow.serving.PredictionService/Classify", PC_GRPC_TFS_CLASSIFY,
     &tensorflow__serving__classification_request__descriptor},
    {"/tensorflow.serving.PredictionService/Regress", PC_GRPC_TFS_REGRESS,
     &tensorflow__serving__regression_request__descriptor},
    {"/inference.GRPCInferenceService/ModelInfer", PC_GRPC_V2_INFER,
     &inference__model_infer_request__descriptor},
};

enum pc_grpc_kind pc_grpc_kind_of(const char *path)
{
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (strcmp(path, methods[i].path) == 0)
            return methods[i].kind;
    return PC_GRPC_UNCACHED;
}

/* ---- the wire ----------------------------------------------------------------------- */

/* A varint at *p (advanced); -1 when cut or longer than 10 bytes. */
static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 70 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

/* One field at *p: its number, wire type and, for length-delimited ones, its payload.
 * 0 ok (p past it); -1 malformed or a group (proto3 has none). */
static int field_next(const uint8_t **p, const uint8_t *end, uint32_t *num, int *wt,
                      const uint8_t **pay, size_t *plen)
{
    uint64_t tag, n;
    if (varint(p, end, &tag) != 0 || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
        return -1;
    *num = (uint32_t)(tag >> 3);
    *wt = (int)(tag & 7);
    *pay = NULL;
    *plen = 0;
    switch (*wt) {
    case 0:
        return varint(p, end, &n);
    case 1:
        if (end - *p < 8)
            return -1;
        *p += 8;
        return 0;
    case 5:
        if (end - *p < 4)
            return -1;
        *p += 4;
        return 0;
    case 2:
        if (varint(p, end, &n) != 0 || n > (uint64_t)(end - *p))
            return -1;
        *pay = *p;
        *plen = (size_t)n;
        *p += n;
        return 0;
    default:
        return -1;
    }
}

/*
 * What the canonical form of a message of descriptor d would not keep: NULL when it keeps
 * everything; else why (an unknown field, a string with a NUL byte, too deep).
 */
static const char *lossy(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t n, int depth)
{
    if (depth > WIRE_DEPTH)
        return "nested too deep";
    const uint8_t *end = p + n;
    while (p < end) {
        uint32_t num;
        int wt;
        const uint8_t *pay;
        size_t plen;
        if (field_next(&p, end, &num, &wt, &pay, &plen) != 0)
            return "malformed"; /* unpack refused it already; never reached */
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, num);
        if (f == NULL)
            return "an unknown field";
        if (wt != 2)
            continue;
        if (f->type == PROTOBUF_C_TYPE_STRING && memchr(pay, 0, plen) != NULL)
            return "a string with a NUL byte";
        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            const char *why = lossy(f->descriptor, pay, plen, depth + 1);
            if (why != NULL)
                return why;
        }
    }
    return NULL;
}

/* ---- canonical form ----------------------------------------------------------------- */

/* A map's entry type: a nested message of two fields, key (1) and value (2). */
static int map_entry(const ProtobufCMessageDescriptor *d)
{
    size_t nl = strlen(d->name);
    return d->n_fields == 2 && d->fields[0].id == 1 && d->fields[1].id == 2 &&
           strcmp(d->fields[0].name, "key") == 0 && d->fields[0].type == PROTOBUF_C_TYPE_STRING &&
           nl > 5 && strcmp(d->name + nl - 5, "Entry") == 0;
}

static const char *entry_key(const ProtobufCMessage *e)
{
    return *(char *const *)((const char *)e + e->descriptor->fields[0].offset);
}

/* Sorts a map's entries by key, the last of a key kept (the others freed). */
static void map_canon(ProtobufCMessage **arr, size_t *n)
{
    /* insertion sort, stable: maps in requests are small */
    for (size_t i = 1; i < *n; i++) {
        ProtobufCMessage *x = arr[i];
        size_t j = i;
        while (j > 0 && strcmp(entry_key(arr[j - 1]), entry_key(x)) > 0) {
            arr[j] = arr[j - 1];
            j--;
        }
        arr[j] = x;
    }
    size_t out = 0;
    for (size_t i = 0; i < *n; i++) {
        if (i + 1 < *n && strcmp(entry_key(arr[i]), entry_key(arr[i + 1])) == 0) {
            protobuf_c_message_free_unpacked(arr[i], NULL); /* a later one wins */
            continue;
        }
        arr[out++] = arr[i];
    }
    *n = out;
}

/* Every map of m and of the messages in it, canonical. */
static void canon(ProtobufCMessage *m, int depth)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields && depth < WIRE_DEPTH; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        char *base = (char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t *n = (size_t *)(base + f->quantifier_offset);
            ProtobufCMessage **arr = *(ProtobufCMessage ***)(base + f->offset);
            if (map_entry(f->descriptor))
                map_canon(arr, n);
            for (size_t k = 0; k < *n; k++)
                canon(arr[k], depth + 1);
            continue;
        }
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(uint32_t *)(base + f->quantifier_offset) != f->id)
            continue; /* not the oneof's member set */
        ProtobufCMessage *sub = *(ProtobufCMessage **)(base + f->offset);
        if (sub != NULL)
            canon(sub, depth + 1);
    }
}

static void text_copy(char *out, size_t cap, const char *s, int *cut)
{
    size_t n = strlen(s);
    if (n >= cap) {
        n = cap - 1;
        if (cut != NULL)
            *cut = 1;
    }
    memcpy(out, s, n);
    out[n] = '\0';
}

static void read_spec(const Tensorflow__Serving__ModelSpec *s, struct pc_grpc_read *rd)
{
    if (s == NULL)
        return;
    text_copy(rd->model, sizeof rd->model, s->name, NULL);
    if (s->version_choice_case == TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION &&
        s->version != NULL) {
        rd->has_version = 1;
        rd->version = s->version->value;
    } else if (s->version_choice_case ==
               TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION_LABEL) {
        rd->has_version = 1;
        text_copy(rd->version_text, sizeof rd->version_text, s->version_label, NULL);
    }
}

/* The model fields of an unpacked request; KServe's id taken out of it. */
static void read_model(enum pc_grpc_kind kind, ProtobufCMessage *m, struct pc_grpc_read *rd)
{
    switch (kind) {
    case PC_GRPC_TFS_PREDICT:
        read_spec(((Tensorflow__Serving__PredictRequest *)m)->model_spec, rd);
        break;
    case PC_GRPC_TFS_CLASSIFY:
        read_spec(((Tensorflow__Serving__ClassificationRequest *)m)->model_spec, rd);
        break;
    case PC_GRPC_TFS_REGRESS:
        read_spec(((Tensorflow__Serving__RegressionRequest *)m)->model_spec, rd);
        break;
    case PC_GRPC_V2_INFER: {
        Inference__ModelInferRequest *r = (Inference__ModelInferRequest *)m;
        text_copy(rd->model, sizeof rd->model, r->model_name, NULL);
        text_copy(rd->version_text, sizeof rd->version_text, r->model_version, NULL);
        rd->has_version = r->model_version[0] != '\0';
        text_copy(rd->id, sizeof rd->id, r->id, &rd->id_cut);
        if (r->id != protobuf_c_empty_string) {
            free(r->id);
            r->id = (char *)protobuf_c_empty_string;
        }
        break;
    }
    default:
        break;
    }
}

/* m's wire bytes, appended to out. 0 ok; -1 no memory. */
static int pack_append(const ProtobufCMessage *m, struct pc_buf *out)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    if (pc_buf_reserve(out, n) != 0)
        return -1;
    out->len += protobuf_c_message_pack(m, (uint8_t *)out->data + out->len);
    return 0;
}

int pc_grpc_key_material(enum pc_grpc_kind kind, const uint8_t *msg, size_t len,
                         struct pc_buf *material, struct pc_grpc_read *rd, char *err, size_t errlen)
{
    memset(rd, 0, sizeof *rd);
    const ProtobufCMessageDescriptor *d = NULL;
    const char *path = "";
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (methods[i].kind == kind) {
            d = methods[i].req;
            path = methods[i].path;
        }
    if (d == NULL) {
        snprintf(err, errlen, "not a cached method");
        return -1;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, msg);
    if (m == NULL) {
        snprintf(err, errlen, "the request message does not decode as %s", d->name);
        return -1;
    }
    read_model(kind, m, rd);
    rd->why_raw = lossy(d, msg, len, 0);
    rd->canonical = rd->why_raw == NULL;
    int rc = pc_buf_printf(material, "grpc1 %s %s\n", path, rd->canonical ? "canonical" : "sent");
    if (rd->canonical) {
        canon(m, 0);
        if (rc == 0)
            rc = pack_append(m, material);
    } else if (rc == 0) {
        /* the bytes as sent; KServe's id is in them, so such a request keys by its id too */
        rc = pc_buf_append(material, msg, len);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* ---- the id of a replayed ModelInfer answer ----------------------------------------- */

#define INFER_ID_FIELD 3 /* ModelInferResponse.id */

int pc_grpc_answer_without_id(const uint8_t *msg, size_t len, struct pc_buf *out)
{
    const uint8_t *p = msg, *end = msg + len;
    while (p < end) {
        const uint8_t *start = p, *pay;
        uint32_t num;
        int wt;
        size_t plen;
        if (field_next(&p, end, &num, &wt, &pay, &plen) != 0)
            return -1;
        if (num == INFER_ID_FIELD && wt == 2)
            continue;
        if (pc_buf_append(out, start, (size_t)(p - start)) != 0)
            return -1;
    }
    return 0;
}

int pc_grpc_answer_with_id(const uint8_t *stored, size_t len, const char *id, struct pc_buf *out)
{
    if (pc_buf_append(out, stored, len) != 0)
        return -1;
    size_t n = strlen(id);
    if (n == 0)
        return 0;
    uint8_t head[11];
    size_t h = 0;
    head[h++] = (INFER_ID_FIELD << 3) | 2;
    for (uint64_t v = n;; v >>= 7) {
        head[h++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        if (v < 0x80)
            break;
    }
    return pc_buf_append(out, head, h) == 0 && pc_buf_append(out, id, n) == 0 ? 0 : -1;
}

/* ---- the version lookup's messages ---------------------------------------------------- */

int pc_grpc_status_request(enum pc_grpc_kind kind, const char *model, const char *label,
                           struct pc_buf *req, const char **path)
{
    if (kind == PC_GRPC_V2_INFER) {
        Inference__ModelMetadataRequest m = INFERENCE__MODEL_METADATA_REQUEST__INIT;
        m.name = (char *)model;
        *path = "/inference.GRPCInferenceService/ModelMetadata";
        return pack_append(&m.base, req);
    }
    Tensorflow__Serving__ModelSpec spec = TENSORFLOW__SERVING__MODEL_SPEC__INIT;
    spec.name = (char *)model;
    if (label != NULL && label[0] != '\0') {
        spec.version_choice_case = TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION_LABEL;
        spec.version_label = (char *)label;
    }
    Tensorflow__Serving__GetModelStatusRequest m =
        TENSORFLOW__SERVING__GET_MODEL_STATUS_REQUEST__INIT;
    m.model_spec = &spec;
    *path = "/tensorflow.serving.ModelService/GetModelStatus";
    return pack_append(&m.base, req);
}

int pc_grpc_status_versions(enum pc_grpc_kind kind, const uint8_t *msg, size_t len,
                            struct pc_buf *out)
{
    int rc = 0;
    if (kind == PC_GRPC_V2_INFER) {
        Inference__ModelMetadataResponse *r =
            inference__model_metadata_response__unpack(NULL, len, msg);
        if (r == NULL)
            return -1;
        for (size_t i = 0; i < r->n_versions && rc == 0; i++)
            if (r->versions[i][0] != '\0' && strchr(r->versions[i], '\n') == NULL)
                rc = pc_buf_printf(out, "%s\n", r->versions[i]); /* else not a version */
        inference__model_metadata_response__free_unpacked(r, NULL);
        return rc;
    }
    Tensorflow__Serving__GetModelStatusResponse *r =
        tensorflow__serving__get_model_status_response__unpack(NULL, len, msg);
    if (r == NULL)
        return -1;
    for (size_t i = 0; i < r->n_model_version_status && rc == 0; i++) {
        const Tensorflow__Serving__ModelVersionStatus *v = r->model_version_status[i];
        if (v->state == TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__AVAILABLE)
            rc = pc_buf_printf(out, "%lld\n", (long long)v->version);
    }
    tensorflow__serving__get_model_status_response__free_unpacked(r, NULL);
    return rc;
}
