/*
 * fuzz_grpckey: a gRPC call's request decoding path on arbitrary bytes: the message prefix
 * (grpcwire), the key material of the cached methods (grpckey), the id of a ModelInfer
 * answer.
 *
 * Input: byte 0 picks the method (bits 0-1) and the frame bound (bits 2-7), the rest is the
 * message (and, for the frame parser, a framed stream).
 * Invariants:
 *   - only the message's bytes are read (an exact-size heap copy); no leak
 *   - a canonical form is a fixed point: the material of the canonical bytes is the same
 *     material, canonical again, with the same model and version read
 *   - the bytes as sent are in a material that is not canonical
 *   - a frame parsed fits the input and says its own length
 *   - an answer without its id, given an id, reads that id (protobuf-c)
 */
#include "fuzz.h"

#include <string.h>

#include "grpc_predict_v2.pb-c.h"
#include "predcache/grpckey.h"
#include "predcache/grpcwire.h"

static const enum pc_grpc_kind kinds[] = {PC_GRPC_TFS_PREDICT, PC_GRPC_TFS_CLASSIFY,
                                          PC_GRPC_TFS_REGRESS, PC_GRPC_V2_INFER};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum pc_grpc_kind kind = kinds[data[0] & 3];
    size_t max = (size_t)1 << (data[0] >> 2 & 31);
    size_t n = size - 1;
    uint8_t *msg = (uint8_t *)fuzz_dup(data + 1, n);

    int compressed;
    const uint8_t *m;
    size_t len, used;
    int fr = pc_grpc_frame_parse(msg, n, max, &compressed, &m, &len, &used);
    if (fr == 1) {
        FUZZ_CHECK(used <= n && used == len + PC_GRPC_PREFIX && len <= max);
        FUZZ_CHECK(m == msg + PC_GRPC_PREFIX && (compressed == 0 || compressed == 1));
    }

    struct pc_buf mat, again;
    pc_buf_init(&mat);
    pc_buf_init(&again);
    struct pc_grpc_read rd, rd2;
    char err[256];
    if (pc_grpc_key_material(kind, msg, n, &mat, &rd, err, sizeof err) == 0) {
        const char *nl = memchr(mat.data, '\n', mat.len);
        FUZZ_CHECK(nl != NULL);
        size_t head = (size_t)(nl + 1 - mat.data);
        if (rd.canonical) {
            FUZZ_CHECK(pc_grpc_key_material(kind, (const uint8_t *)mat.data + head, mat.len - head,
                                            &again, &rd2, err, sizeof err) == 0);
            FUZZ_CHECK(rd2.canonical);
            FUZZ_CHECK(again.len == mat.len && memcmp(again.data, mat.data, mat.len) == 0);
            FUZZ_CHECK(strcmp(rd.model, rd2.model) == 0 && rd.has_version == rd2.has_version &&
                       rd.version == rd2.version && strcmp(rd.version_text, rd2.version_text) == 0);
            FUZZ_CHECK(rd2.id[0] == '\0'); /* the id is never in the canonical bytes */
        } else {
            FUZZ_CHECK(mat.len - head == n && memcmp(mat.data + head, msg, n) == 0);
        }
    }

    struct pc_buf bare, with;
    pc_buf_init(&bare);
    pc_buf_init(&with);
    if (pc_grpc_answer_without_id(msg, n, &bare) == 0 &&
        pc_grpc_answer_with_id((const uint8_t *)bare.data, bare.len, "fuzz-id", &with) == 0) {
        Inference__ModelInferResponse *r =
            inference__model_infer_response__unpack(NULL, with.len, (const uint8_t *)with.data);
        if (r != NULL) { /* when the rest is a ModelInferResponse at all */
            FUZZ_CHECK(strcmp(r->id, "fuzz-id") == 0);
            inference__model_infer_response__free_unpacked(r, NULL);
        }
    }
    pc_buf_release(&bare);
    pc_buf_release(&with);

    /* The version lookup's answer, as a model server sends it: every line listed is one
     * version, a line each, none empty of a digit for TF Serving. */
    struct pc_buf versions;
    pc_buf_init(&versions);
    if (pc_grpc_status_versions(kind == PC_GRPC_V2_INFER ? PC_GRPC_V2_INFER : PC_GRPC_TFS_PREDICT,
                                msg, n, &versions) == 0 &&
        versions.len > 0) {
        FUZZ_CHECK(versions.data[versions.len - 1] == '\n');
        if (kind != PC_GRPC_V2_INFER)
            FUZZ_CHECK(strspn(versions.data, "-0123456789\n") == versions.len);
    }
    pc_buf_release(&versions);
    pc_buf_release(&mat);
    pc_buf_release(&again);
    free(msg);
    return 0;
}
