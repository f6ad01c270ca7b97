/* The key material of cached gRPC calls: what must share a key (map order, a repeated map
 * key, KServe's id) and what must not (another tensor, an unknown field, bytes after a NUL),
 * and the id of a replayed ModelInfer answer. Requests are written as wire bytes by hand, so
 * that the orders and forms protobuf-c never writes can be sent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "grpc_predict_v2.pb-c.h"
#include "tensorflow_serving/apis/get_model_status.pb-c.h"
#include "predcache/grpckey.h"
#include "wire.h"

static void put_str(struct wire *w, uint32_t field, const char *s)
{
    put_len(w, field, s, strlen(s));
}

/* TensorProto {dtype: DT_FLOAT (1), float_val: [v, v + 1] (packed, field 5)} */
static struct wire tensor(float v)
{
    struct wire t = {0}, vals = {0};
    put_varint(&t, (1 << 3) | 0);
    put_varint(&t, 1);
    float f[2] = {v, v + 1};
    memcpy(vals.b, f, sizeof f);
    vals.n = sizeof f;
    put_wire(&t, 5, &vals);
    return t;
}

/* PredictRequest {model_spec {name, version {value}}, inputs: entries (key, tensor) in
 * the order given}. */
static struct wire predict(const char *model, int version, size_t n, const char *const *keys,
                           const float *vals)
{
    struct wire w = {0}, spec = {0};
    put_str(&spec, 1, model);
    if (version > 0) {
        struct wire v = {0};
        put_varint(&v, (1 << 3) | 0);
        put_varint(&v, (uint64_t)version);
        put_wire(&spec, 2, &v);
    }
    put_wire(&w, 1, &spec);
    for (size_t i = 0; i < n; i++) {
        struct wire e = {0}, t = tensor(vals[i]);
        put_str(&e, 1, keys[i]);
        put_wire(&e, 2, &t);
        put_wire(&w, 2, &e);
    }
    return w;
}

/* The material of w for kind, asserted to decode. */
static struct pc_buf material(enum pc_grpc_kind kind, const struct wire *w, struct pc_grpc_read *rd)
{
    struct pc_buf b;
    pc_buf_init(&b);
    char err[256];
    assert_int_equal(pc_grpc_key_material(kind, w->b, w->n, &b, rd, err, sizeof err), 0);
    return b;
}

static int same(const struct pc_buf *a, const struct pc_buf *b)
{
    return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

static void test_kinds(void **state)
{
    (void)state;
    assert_int_equal(pc_grpc_kind_of("/tensorflow.serving.PredictionService/Predict"),
                     PC_GRPC_TFS_PREDICT);
    assert_int_equal(pc_grpc_kind_of("/tensorflow.serving.PredictionService/Classify"),
                     PC_GRPC_TFS_CLASSIFY);
    assert_int_equal(pc_grpc_kind_of("/tensorflow.serving.PredictionService/Regress"),
                     PC_GRPC_TFS_REGRESS);
    assert_int_equal(pc_grpc_kind_of("/inference.GRPCInferenceService/ModelInfer"),
                     PC_GRPC_V2_INFER);
    assert_int_equal(pc_grpc_kind_of("/tensorflow.serving.PredictionService/GetModelMetadata"),
                     PC_GRPC_UNCACHED);
    assert_int_equal(pc_grpc_kind_of("/inference.GRPCInferenceService/ModelInfer/"),
                     PC_GRPC_UNCACHED);
    assert_int_equal(pc_grpc_kind_of(""), PC_GRPC_UNCACHED);
}

static void test_map_order_and_repeated_keys_share_a_key(void **state)
{
    (void)state;
    const char *ab[] = {"a", "b"}, *ba[] = {"b", "a"}, *aab[] = {"a", "a", "b"};
    float v12[] = {1, 2}, v21[] = {2, 1}, v012[] = {0, 1, 2}, v912[] = {9, 1, 2};
    struct pc_grpc_read r1, r2, r3, r4;
    struct wire w1 = predict("m", 3, 2, ab, v12), w2 = predict("m", 3, 2, ba, v21);
    struct wire w3 = predict("m", 3, 3, aab, v012), w4 = predict("m", 3, 3, aab, v912);
    struct pc_buf m1 = material(PC_GRPC_TFS_PREDICT, &w1, &r1);
    struct pc_buf m2 = material(PC_GRPC_TFS_PREDICT, &w2, &r2);
    struct pc_buf m3 = material(PC_GRPC_TFS_PREDICT, &w3, &r3);
    struct pc_buf m4 = material(PC_GRPC_TFS_PREDICT, &w4, &r4);
    assert_true(r1.canonical && r2.canonical && r3.canonical);
    assert_true(same(&m1, &m2)); /* the same map, sent in another order */
    assert_true(same(&m1, &m3)); /* "a" twice: the last one counts, as servers read it */
    assert_true(same(&m3, &m4)); /* the first "a" is not read */
    assert_string_equal(r1.model, "m");
    assert_true(r1.has_version);
    assert_int_equal(r1.version, 3);
    pc_buf_release(&m1);
    pc_buf_release(&m2);
    pc_buf_release(&m3);
    pc_buf_release(&m4);
}

static void test_what_is_read_makes_another_key(void **state)
{
    (void)state;
    const char *a[] = {"a"}, *b[] = {"b"};
    float v1[] = {1}, v2[] = {2};
    struct wire ws[] = {predict("m", 3, 1, a, v1), predict("m", 3, 1, a, v2),
                        predict("m", 3, 1, b, v1), predict("n", 3, 1, a, v1),
                        predict("m", 4, 1, a, v1), predict("m", 0, 1, a, v1)};
    struct pc_buf m[6];
    struct pc_grpc_read rd;
    for (size_t i = 0; i < 6; i++)
        m[i] = material(PC_GRPC_TFS_PREDICT, &ws[i], &rd);
    for (size_t i = 0; i < 6; i++)
        for (size_t j = i + 1; j < 6; j++)
            assert_false(same(&m[i], &m[j]));
    assert_false(rd.has_version); /* the last: no version given */
    /* the same request on another method is another key */
    struct pc_buf c = material(PC_GRPC_TFS_REGRESS, &(struct wire){{0}, 0}, &rd);
    struct pc_buf d = material(PC_GRPC_TFS_CLASSIFY, &(struct wire){{0}, 0}, &rd);
    assert_false(same(&c, &d));
    for (size_t i = 0; i < 6; i++)
        pc_buf_release(&m[i]);
    pc_buf_release(&c);
    pc_buf_release(&d);
}

static void test_unknown_fields_and_nul_bytes_key_the_bytes_as_sent(void **state)
{
    (void)state;
    const char *a[] = {"a"};
    float v1[] = {1};
    struct pc_grpc_read rd;
    /* an unknown field (15) with two values: both would pack the same way */
    struct wire u1 = predict("m", 3, 1, a, v1), u2 = u1;
    put_str(&u1, 15, "x");
    put_str(&u2, 15, "y");
    struct pc_buf m1 = material(PC_GRPC_TFS_PREDICT, &u1, &rd);
    assert_false(rd.canonical);
    assert_string_equal(rd.why_raw, "an unknown field");
    struct pc_buf m2 = material(PC_GRPC_TFS_PREDICT, &u2, &rd);
    assert_false(same(&m1, &m2));
    assert_memory_equal(m1.data + m1.len - u1.n, u1.b, u1.n);
    /* an unknown field deep inside (in a tensor) */
    struct wire deep = {0}, t = tensor(1), e = {0};
    put_str(&t, 99, "z");
    put_str(&e, 1, "a");
    put_wire(&e, 2, &t);
    put_wire(&deep, 2, &e);
    struct pc_buf m3 = material(PC_GRPC_TFS_PREDICT, &deep, &rd);
    assert_false(rd.canonical);
    /* strings that differ after a NUL byte: protobuf-c would cut both to "m" */
    struct wire n1 = predict("m\0x", 3, 1, a, v1), n2 = predict("m\0y", 3, 1, a, v1);
    n1 = (struct wire){{0}, 0};
    n2 = (struct wire){{0}, 0};
    struct wire s1 = {0}, s2 = {0};
    put_len(&s1, 1, "m\0x", 3);
    put_len(&s2, 1, "m\0y", 3);
    put_wire(&n1, 1, &s1);
    put_wire(&n2, 1, &s2);
    struct pc_buf m4 = material(PC_GRPC_TFS_PREDICT, &n1, &rd);
    assert_false(rd.canonical);
    assert_string_equal(rd.why_raw, "a string with a NUL byte");
    struct pc_buf m5 = material(PC_GRPC_TFS_PREDICT, &n2, &rd);
    assert_false(same(&m4, &m5));
    pc_buf_release(&m1);
    pc_buf_release(&m2);
    pc_buf_release(&m3);
    pc_buf_release(&m4);
    pc_buf_release(&m5);
}

static void test_what_does_not_decode(void **state)
{
    (void)state;
    static const uint8_t bad[][4] = {{0xff, 0xff, 0xff, 0xff}, {0x0a, 0x05, 'm', 0}};
    struct pc_buf b;
    pc_buf_init(&b);
    struct pc_grpc_read rd;
    char err[256];
    for (size_t i = 0; i < 2; i++)
        assert_int_equal(
            pc_grpc_key_material(PC_GRPC_TFS_PREDICT, bad[i], 4, &b, &rd, err, sizeof err), -1);
    assert_int_equal(pc_grpc_key_material(PC_GRPC_UNCACHED, bad[0], 0, &b, &rd, err, sizeof err),
                     -1);
    pc_buf_release(&b);
}

/* ModelInferRequest {model_name, id, inputs [{name, datatype, shape, contents}]} */
static struct wire infer(const char *id, const char *input)
{
    struct wire w = {0}, in = {0};
    put_str(&w, 1, "simple");
    if (id != NULL)
        put_str(&w, 3, id);
    put_str(&in, 1, input);
    put_str(&in, 2, "FP32");
    put_wire(&w, 5, &in);
    return w;
}

static void test_kserve_id_is_not_in_the_key(void **state)
{
    (void)state;
    struct pc_grpc_read r1, r2, r3, r4;
    struct wire w1 = infer("r1", "x"), w2 = infer("r2", "x"), w3 = infer(NULL, "x");
    struct wire w4 = infer("r1", "y");
    struct pc_buf m1 = material(PC_GRPC_V2_INFER, &w1, &r1);
    struct pc_buf m2 = material(PC_GRPC_V2_INFER, &w2, &r2);
    struct pc_buf m3 = material(PC_GRPC_V2_INFER, &w3, &r3);
    struct pc_buf m4 = material(PC_GRPC_V2_INFER, &w4, &r4);
    assert_true(same(&m1, &m2) && same(&m1, &m3));
    assert_false(same(&m1, &m4));
    assert_string_equal(r1.id, "r1");
    assert_string_equal(r2.id, "r2");
    assert_string_equal(r3.id, "");
    assert_string_equal(r1.model, "simple");
    assert_false(r1.has_version);
    pc_buf_release(&m1);
    pc_buf_release(&m2);
    pc_buf_release(&m3);
    pc_buf_release(&m4);
}

static void test_replayed_answer_carries_the_requesters_id(void **state)
{
    (void)state;
    struct wire ans = {0}, out = {0};
    put_str(&ans, 1, "simple");
    put_str(&ans, 2, "1");
    put_str(&ans, 3, "first-requester");
    put_str(&out, 1, "output0");
    put_wire(&ans, 5, &out);
    struct pc_buf stored, replay;
    pc_buf_init(&stored);
    assert_int_equal(pc_grpc_answer_without_id(ans.b, ans.n, &stored), 0);
    const char *ids[] = {"", "second",
                         "a-much-longer-id-of-more-than-127-bytes........................"
                         "..................................................."};
    for (size_t i = 0; i < 3; i++) {
        pc_buf_init(&replay);
        assert_int_equal(
            pc_grpc_answer_with_id((const uint8_t *)stored.data, stored.len, ids[i], &replay), 0);
        Inference__ModelInferResponse *r =
            inference__model_infer_response__unpack(NULL, replay.len, (const uint8_t *)replay.data);
        assert_non_null(r);
        assert_string_equal(r->id, ids[i]);
        assert_string_equal(r->model_name, "simple");
        assert_string_equal(r->model_version, "1");
        assert_int_equal(r->n_outputs, 1);
        inference__model_infer_response__free_unpacked(r, NULL);
        pc_buf_release(&replay);
    }
    struct pc_buf junk;
    pc_buf_init(&junk);
    assert_int_equal(pc_grpc_answer_without_id((const uint8_t *)"\x0a\x09", 2, &junk), -1);
    pc_buf_release(&junk);
    pc_buf_release(&stored);
}

/* The version lookup's request names the model (and label); its answer's serving versions
 * are read: TF Serving's AVAILABLE ones only, KServe v2's all. */
static void test_status_request_and_versions(void **state)
{
    (void)state;
    struct pc_buf b;
    pc_buf_init(&b);
    const char *path;
    assert_int_equal(pc_grpc_status_request(PC_GRPC_TFS_PREDICT, "m", "stable", &b, &path), 0);
    assert_string_equal(path, "/tensorflow.serving.ModelService/GetModelStatus");
    Tensorflow__Serving__GetModelStatusRequest *rq =
        tensorflow__serving__get_model_status_request__unpack(NULL, b.len, (uint8_t *)b.data);
    assert_non_null(rq);
    assert_string_equal(rq->model_spec->name, "m");
    assert_int_equal(rq->model_spec->version_choice_case,
                     TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION_LABEL);
    assert_string_equal(rq->model_spec->version_label, "stable");
    tensorflow__serving__get_model_status_request__free_unpacked(rq, NULL);
    b.len = 0;
    assert_int_equal(pc_grpc_status_request(PC_GRPC_V2_INFER, "ocr", "", &b, &path), 0);
    assert_string_equal(path, "/inference.GRPCInferenceService/ModelMetadata");
    Inference__ModelMetadataRequest *mq =
        inference__model_metadata_request__unpack(NULL, b.len, (uint8_t *)b.data);
    assert_non_null(mq);
    assert_string_equal(mq->name, "ocr");
    assert_string_equal(mq->version, "");
    inference__model_metadata_request__free_unpacked(mq, NULL);

    /* TF Serving: versions 3 (LOADING), 2 (AVAILABLE), 1 (AVAILABLE) */
    Tensorflow__Serving__ModelVersionStatus v[3], *vp[3];
    const int64_t nums[3] = {3, 2, 1};
    const Tensorflow__Serving__ModelVersionStatus__State states[3] = {
        TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__LOADING,
        TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__AVAILABLE,
        TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__AVAILABLE};
    for (int i = 0; i < 3; i++) {
        tensorflow__serving__model_version_status__init(&v[i]);
        v[i].version = nums[i];
        v[i].state = states[i];
        vp[i] = &v[i];
    }
    Tensorflow__Serving__GetModelStatusResponse r =
        TENSORFLOW__SERVING__GET_MODEL_STATUS_RESPONSE__INIT;
    r.n_model_version_status = 3;
    r.model_version_status = vp;
    uint8_t wire[256];
    size_t n = tensorflow__serving__get_model_status_response__pack(&r, wire);
    struct pc_buf out;
    pc_buf_init(&out);
    assert_int_equal(pc_grpc_status_versions(PC_GRPC_TFS_PREDICT, wire, n, &out), 0);
    assert_int_equal(out.len, 4);
    assert_memory_equal(out.data, "2\n1\n", 4);
    /* KServe v2: every version listed; none listed: nothing */
    char one[] = "1", ten[] = "10", ocr[] = "ocr", odd[] = "7\n99", none[] = "";
    char *names[] = {one, odd, none, ten};
    Inference__ModelMetadataResponse mr = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
    mr.name = ocr;
    mr.n_versions = 4; /* two that are no version: "7\n99" and "" */
    mr.versions = names;
    n = inference__model_metadata_response__pack(&mr, wire);
    out.len = 0;
    assert_int_equal(pc_grpc_status_versions(PC_GRPC_V2_INFER, wire, n, &out), 0);
    assert_int_equal(out.len, 5);
    assert_memory_equal(out.data, "1\n10\n", 5);
    mr.n_versions = 0;
    n = inference__model_metadata_response__pack(&mr, wire);
    out.len = 0;
    assert_int_equal(pc_grpc_status_versions(PC_GRPC_V2_INFER, wire, n, &out), 0);
    assert_int_equal(out.len, 0);
    /* not a message */
    assert_int_equal(
        pc_grpc_status_versions(PC_GRPC_TFS_PREDICT, (const uint8_t *)"\x0a\x09", 2, &out), -1);
    pc_buf_release(&out);
    pc_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kinds),
        cmocka_unit_test(test_map_order_and_repeated_keys_share_a_key),
        cmocka_unit_test(test_what_is_read_makes_another_key),
        cmocka_unit_test(test_unknown_fields_and_nul_bytes_key_the_bytes_as_sent),
        cmocka_unit_test(test_what_does_not_decode),
        cmocka_unit_test(test_kserve_id_is_not_in_the_key),
        cmocka_unit_test(test_replayed_answer_carries_the_requesters_id),
        cmocka_unit_test(test_status_request_and_versions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
