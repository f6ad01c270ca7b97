/*
 * grpckey: how a cached gRPC call reads (pure): which methods are cached (TF Serving's
 * Predict, Classify and Regress, KServe v2's ModelInfer) and the key material of a request
 * message: decoded with protobuf-c and written again canonically (fields in number order,
 * default values left out, repeated numbers packed, map entries sorted by key with the last
 * of a key kept, as servers keep it), or, when a canonical form could mean something the
 * request did not (an unknown field, whose place protobuf-c does not keep; a string with a
 * NUL byte, which protobuf-c cuts), the message's bytes as sent. KServe v2's id is left
 * out of the key and written back into a replayed answer.
 */
#ifndef PREDCACHE_GRPCKEY_H
#define PREDCACHE_GRPCKEY_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/buf.h"

enum pc_grpc_kind {
    PC_GRPC_UNCACHED = 0, /* passed through */
    PC_GRPC_TFS_PREDICT,
    PC_GRPC_TFS_CLASSIFY,
    PC_GRPC_TFS_REGRESS,
    PC_GRPC_V2_INFER,
};

/* The kind of the method at path ("/package.Service/Method"). */
enum pc_grpc_kind pc_grpc_kind_of(const char *path);

#define PC_GRPC_NAME_MAX 256

/* What a request says of its model, for the version and the logs. */
struct pc_grpc_read {
    int canonical;       /* 1: the material is the canonical form; 0: the bytes as sent */
    const char *why_raw; /* when canonical is 0: why */
    char model[PC_GRPC_NAME_MAX];
    int has_version; /* TF Serving: model_spec.version set; KServe: model_version not "" */
    int64_t version; /* TF Serving's version */
    char version_text[PC_GRPC_NAME_MAX]; /* TF Serving's version_label, KServe's model_version */
    char id[PC_GRPC_NAME_MAX];           /* KServe v2's id (not in the key) */
    int id_cut;                          /* the id was longer than id[] (not cacheable) */
};

/*
 * The key material of a request of kind (not PC_GRPC_UNCACHED) in material (appended).
 * 0 ok; -1 when the message does not decode (the caller answers INVALID_ARGUMENT), with a
 * reason in err.
 */
int pc_grpc_key_material(enum pc_grpc_kind kind, const uint8_t *msg, size_t len,
                         struct pc_buf *material, struct pc_grpc_read *rd, char *err,
                         size_t errlen);

/* A ModelInfer answer without its id field (3), as stored; appended to out. 0 ok; -1 when
 * the bytes are not a message. */
int pc_grpc_answer_without_id(const uint8_t *msg, size_t len, struct pc_buf *out);
/* A stored ModelInfer answer (without id) for a request whose id is id ("": none):
 * appended to out. */
int pc_grpc_answer_with_id(const uint8_t *stored, size_t len, const char *id, struct pc_buf *out);

/*
 * The version lookup over gRPC, for calls that name no version (or a TF Serving label): the
 * status request of the model server's API for model (and label) in req (appended), its
 * method's path in *path. TF Serving: ModelService/GetModelStatus; KServe v2:
 * GRPCInferenceService/ModelMetadata. 0 ok; -1 no memory.
 */
int pc_grpc_status_request(enum pc_grpc_kind kind, const char *model, const char *label,
                           struct pc_buf *req, const char **path);
/* The versions its answer lists as serving, one per line, appended to out: TF Serving's
 * AVAILABLE ones, KServe v2's versions (but an empty one, or one with a newline). 0 ok (none
 * listed: out unchanged); -1 when the bytes are not its answer. */
int pc_grpc_status_versions(enum pc_grpc_kind kind, const uint8_t *msg, size_t len,
                            struct pc_buf *out);

#endif
