/* Unit tests of the gRPC messages protoc-c generates from proto/: a TF Serving PredictRequest
 * and a KServe v2 ModelInferRequest survive pack and unpack field for field, and what
 * protobuf-c 1.4.1 does with the wire forms a canonical re-serialization (the gRPC cache key)
 * has to care about: unknown fields, map entries, proto3 defaults, unpacked repeated
 * scalars, oneofs, repeated sub-messages, strings holding a NUL byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "grpc_predict_v2.pb-c.h"
#include "wire.h"
#include "tensorflow_serving/apis/predict.pb-c.h"

/* ------------------------------------------------------------------------------ helpers */

/* A string literal as protobuf-c's char * (packing only reads it). */
static char *lit(const char *s)
{
    return (char *)s;
}

/* m packed into a malloc'd buffer (the caller frees it); *n its length. */
static uint8_t *pack(const ProtobufCMessage *m, size_t *n)
{
    *n = protobuf_c_message_get_packed_size(m);
    uint8_t *out = malloc(*n ? *n : 1);
    assert_non_null(out);
    assert_int_equal(protobuf_c_message_pack(m, out), *n);
    return out;
}

/* Unpacks data as d, packs the result again: the bytes protobuf-c writes for what it read. */
static uint8_t *repack(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t n,
                       size_t *out_n)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, n, data);
    assert_non_null(m);
    uint8_t *out = pack(m, out_n);
    protobuf_c_message_free_unpacked(m, NULL);
    return out;
}

static void assert_bytes_equal(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    assert_int_equal(an, bn);
    assert_memory_equal(a, b, an);
}

/* ------------------------------------------------------------------ TF Serving Predict */

/* The PredictRequest of the tests: model "mnist", signature "predict_images", version 3,
 * inputs "images" (2x2 float) and "scale" (1 float), output_filter "scores". Built on the
 * caller's stack; pack it with predict_fixture_pack. */
struct predict_fixture {
    Tensorflow__Serving__PredictRequest req;
    Tensorflow__Serving__ModelSpec spec;
    Google__Protobuf__Int64Value version;
    Tensorflow__Serving__PredictRequest__InputsEntry entry[2], *entries[2];
    Tensorflow__TensorProto tensor[2];
    Tensorflow__TensorShapeProto shape[2];
    Tensorflow__TensorShapeProto__Dim dim[3], *dims0[2], *dims1[1];
    float images[4], scale[1];
    char *filter[1];
};

static void predict_fixture_init(struct predict_fixture *f)
{
    static const float images[4] = {0.5f, 1.5f, -2.25f, 3.0f};
    memset(f, 0, sizeof *f);
    f->req = (Tensorflow__Serving__PredictRequest)TENSORFLOW__SERVING__PREDICT_REQUEST__INIT;
    f->spec = (Tensorflow__Serving__ModelSpec)TENSORFLOW__SERVING__MODEL_SPEC__INIT;
    f->version = (Google__Protobuf__Int64Value)GOOGLE__PROTOBUF__INT64_VALUE__INIT;
    f->version.value = 3;
    f->spec.name = lit("mnist");
    f->spec.signature_name = lit("predict_images");
    f->spec.version_choice_case = TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION;
    f->spec.version = &f->version;
    f->req.model_spec = &f->spec;

    for (int i = 0; i < 3; i++) {
        f->dim[i] = (Tensorflow__TensorShapeProto__Dim)TENSORFLOW__TENSOR_SHAPE_PROTO__DIM__INIT;
    }
    f->dim[0].size = 2;
    f->dim[1].size = 2;
    f->dim[2].size = 1;
    f->dims0[0] = &f->dim[0];
    f->dims0[1] = &f->dim[1];
    f->dims1[0] = &f->dim[2];
    memcpy(f->images, images, sizeof images);
    f->scale[0] = 0.25f;
    for (int i = 0; i < 2; i++) {
        f->shape[i] = (Tensorflow__TensorShapeProto)TENSORFLOW__TENSOR_SHAPE_PROTO__INIT;
        f->tensor[i] = (Tensorflow__TensorProto)TENSORFLOW__TENSOR_PROTO__INIT;
        f->tensor[i].dtype = TENSORFLOW__DATA_TYPE__DT_FLOAT;
        f->tensor[i].tensor_shape = &f->shape[i];
        f->entry[i] = (Tensorflow__Serving__PredictRequest__InputsEntry)
            TENSORFLOW__SERVING__PREDICT_REQUEST__INPUTS_ENTRY__INIT;
        f->entry[i].value = &f->tensor[i];
        f->entries[i] = &f->entry[i];
    }
    f->shape[0].n_dim = 2;
    f->shape[0].dim = f->dims0;
    f->shape[1].n_dim = 1;
    f->shape[1].dim = f->dims1;
    f->tensor[0].n_float_val = 4;
    f->tensor[0].float_val = f->images;
    f->tensor[1].n_float_val = 1;
    f->tensor[1].float_val = f->scale;
    f->entry[0].key = lit("images");
    f->entry[1].key = lit("scale");
    f->req.n_inputs = 2;
    f->req.inputs = f->entries;
    f->filter[0] = lit("scores");
    f->req.n_output_filter = 1;
    f->req.output_filter = f->filter;
}

static uint8_t *predict_fixture_pack(size_t *n)
{
    struct predict_fixture f;
    predict_fixture_init(&f);
    return pack(&f.req.base, n);
}

static void test_predict_request_round_trip(void **state)
{
    (void)state;
    size_t n;
    uint8_t *wire = predict_fixture_pack(&n);

    Tensorflow__Serving__PredictRequest *r =
        tensorflow__serving__predict_request__unpack(NULL, n, wire);
    assert_non_null(r);
    assert_non_null(r->model_spec);
    assert_string_equal(r->model_spec->name, "mnist");
    assert_string_equal(r->model_spec->signature_name, "predict_images");
    assert_int_equal(r->model_spec->version_choice_case,
                     TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION);
    assert_non_null(r->model_spec->version);
    assert_int_equal(r->model_spec->version->value, 3);

    /* The map comes back as its entries, in wire order. */
    assert_int_equal(r->n_inputs, 2);
    const Tensorflow__Serving__PredictRequest__InputsEntry *e0 = r->inputs[0], *e1 = r->inputs[1];
    assert_string_equal(e0->key, "images");
    assert_int_equal(e0->value->dtype, TENSORFLOW__DATA_TYPE__DT_FLOAT);
    assert_int_equal(e0->value->tensor_shape->n_dim, 2);
    assert_int_equal(e0->value->tensor_shape->dim[0]->size, 2);
    assert_int_equal(e0->value->tensor_shape->dim[1]->size, 2);
    assert_string_equal(e0->value->tensor_shape->dim[0]->name, "");
    assert_false(e0->value->tensor_shape->unknown_rank);
    assert_int_equal(e0->value->n_float_val, 4);
    const float images[4] = {0.5f, 1.5f, -2.25f, 3.0f};
    assert_memory_equal(e0->value->float_val, images, sizeof images);
    assert_string_equal(e1->key, "scale");
    assert_int_equal(e1->value->dtype, TENSORFLOW__DATA_TYPE__DT_FLOAT);
    assert_int_equal(e1->value->tensor_shape->n_dim, 1);
    assert_int_equal(e1->value->tensor_shape->dim[0]->size, 1);
    assert_int_equal(e1->value->n_float_val, 1);
    assert_true(e1->value->float_val[0] == 0.25f);
    for (size_t i = 0; i < r->n_inputs; i++) {
        const Tensorflow__TensorProto *t = r->inputs[i]->value;
        assert_int_equal(t->version_number, 0);
        assert_int_equal(t->tensor_content.len, 0);
        assert_int_equal(t->n_double_val + t->n_int_val + t->n_string_val + t->n_int64_val +
                             t->n_bool_val + t->n_half_val + t->n_uint32_val + t->n_uint64_val,
                         0);
        assert_int_equal(t->base.n_unknown_fields, 0);
    }
    assert_int_equal(r->n_output_filter, 1);
    assert_string_equal(r->output_filter[0], "scores");
    assert_int_equal(r->base.n_unknown_fields, 0);

    /* Packing what was read gives the same bytes. */
    size_t n2;
    uint8_t *again = pack(&r->base, &n2);
    assert_bytes_equal(again, n2, wire, n);
    free(again);
    tensorflow__serving__predict_request__free_unpacked(r, NULL);
    free(wire);
}

/* Fields 99 (varint) and 100 (bytes): numbers the proto does not declare, appended to the
 * packed request, are kept with their bytes and written back in place, in order. */
static void test_predict_unknown_fields_kept(void **state)
{
    (void)state;
    size_t n;
    uint8_t *packed = predict_fixture_pack(&n);
    struct wire w = {.n = 0};
    put_bytes(&w, packed, n);
    put_tag(&w, 99, 0);
    put_varint(&w, 150);
    put_len(&w, 100, "hello", 5);

    Tensorflow__Serving__PredictRequest *r =
        tensorflow__serving__predict_request__unpack(NULL, w.n, w.b);
    assert_non_null(r);
    assert_int_equal(r->base.n_unknown_fields, 2);
    const ProtobufCMessageUnknownField *u = r->base.unknown_fields;
    assert_int_equal(u[0].tag, 99);
    assert_int_equal(u[0].wire_type, PROTOBUF_C_WIRE_TYPE_VARINT);
    assert_int_equal(u[0].len, 2); /* the varint's bytes */
    assert_memory_equal(u[0].data, "\x96\x01", 2);
    assert_int_equal(u[1].tag, 100);
    assert_int_equal(u[1].wire_type, PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED);
    assert_int_equal(u[1].len, 6); /* the length prefix and the bytes */
    assert_memory_equal(u[1].data, "\x05hello", 6);
    assert_string_equal(r->model_spec->name, "mnist");

    size_t n2;
    uint8_t *again = pack(&r->base, &n2);
    assert_bytes_equal(again, n2, w.b, w.n);
    free(again);
    tensorflow__serving__predict_request__free_unpacked(r, NULL);
    free(packed);
}

/* An unknown field inside a map value (a TensorProto's float8_val, field 18, newer than
 * proto/'s tensor.proto) stays in that tensor. */
static void test_predict_unknown_field_in_map_value_kept(void **state)
{
    (void)state;
    struct predict_fixture f;
    predict_fixture_init(&f);
    uint8_t f8[] = {0x02, 0x7e, 0x01};
    ProtobufCMessageUnknownField u = {
        .tag = 18, .wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED, .len = 3, .data = f8};
    f.tensor[1].base.n_unknown_fields = 1;
    f.tensor[1].base.unknown_fields = &u;
    size_t n;
    uint8_t *wire = pack(&f.req.base, &n);

    Tensorflow__Serving__PredictRequest *r =
        tensorflow__serving__predict_request__unpack(NULL, n, wire);
    assert_non_null(r);
    assert_int_equal(r->base.n_unknown_fields, 0);
    assert_int_equal(r->inputs[0]->value->base.n_unknown_fields, 0);
    const Tensorflow__TensorProto *t = r->inputs[1]->value;
    assert_int_equal(t->base.n_unknown_fields, 1);
    assert_int_equal(t->base.unknown_fields[0].tag, 18);
    assert_int_equal(t->base.unknown_fields[0].len, 3);
    assert_memory_equal(t->base.unknown_fields[0].data, f8, 3);
    size_t n2;
    uint8_t *again = pack(&r->base, &n2);
    assert_bytes_equal(again, n2, wire, n);
    free(again);
    tensorflow__serving__predict_request__free_unpacked(r, NULL);
    free(wire);
}

/* Unknown fields are written after every known field: an unknown field sent first moves.
 * Their order among themselves is kept. */
static void test_unknown_fields_written_after_known(void **state)
{
    (void)state;
    size_t n;
    uint8_t *packed = predict_fixture_pack(&n);
    struct wire sent = {.n = 0}, want = {.n = 0};
    put_tag(&sent, 100, 0);
    put_varint(&sent, 1);
    put_bytes(&sent, packed, n);
    put_tag(&sent, 99, 0);
    put_varint(&sent, 2);
    put_bytes(&want, packed, n);
    put_tag(&want, 100, 0);
    put_varint(&want, 1);
    put_tag(&want, 99, 0);
    put_varint(&want, 2);

    size_t n2;
    uint8_t *again = repack(&tensorflow__serving__predict_request__descriptor, sent.b, sent.n, &n2);
    assert_bytes_equal(again, n2, want.b, want.n);
    free(again);
    free(packed);
}

/* A map is a repeated entry message to protobuf-c: entries come back as sent, in wire
 * order, a key given twice twice (a C++ server keeps the last). Sorting the entries and
 * keeping the last of a key is the canonical form's job. */
static void test_map_entries_kept_as_sent(void **state)
{
    (void)state;
    struct predict_fixture f;
    predict_fixture_init(&f);
    f.entry[0].key = lit("x");
    f.entry[1].key = lit("x");
    size_t n;
    uint8_t *wire = pack(&f.req.base, &n);
    Tensorflow__Serving__PredictRequest *r =
        tensorflow__serving__predict_request__unpack(NULL, n, wire);
    assert_non_null(r);
    assert_int_equal(r->n_inputs, 2);
    assert_string_equal(r->inputs[0]->key, "x");
    assert_int_equal(r->inputs[0]->value->n_float_val, 4);
    assert_string_equal(r->inputs[1]->key, "x");
    assert_int_equal(r->inputs[1]->value->n_float_val, 1);
    tensorflow__serving__predict_request__free_unpacked(r, NULL);
    free(wire);

    /* "scale" before "images": packed in that order, read back in that order. */
    predict_fixture_init(&f);
    f.entries[0] = &f.entry[1];
    f.entries[1] = &f.entry[0];
    wire = pack(&f.req.base, &n);
    r = tensorflow__serving__predict_request__unpack(NULL, n, wire);
    assert_non_null(r);
    assert_string_equal(r->inputs[0]->key, "scale");
    assert_string_equal(r->inputs[1]->key, "images");
    tensorflow__serving__predict_request__free_unpacked(r, NULL);
    free(wire);

    /* An entry without a key or a value reads as "" and NULL. */
    struct wire w = {.n = 0}, empty = {.n = 0};
    put_wire(&w, 2, &empty);
    r = tensorflow__serving__predict_request__unpack(NULL, w.n, w.b);
    assert_non_null(r);
    assert_int_equal(r->n_inputs, 1);
    assert_string_equal(r->inputs[0]->key, "");
    assert_null(r->inputs[0]->value);
    tensorflow__serving__predict_request__free_unpacked(r, NULL);
}

/* protobuf-c writes proto3's canonical forms itself: an explicit default (dtype = 0,
 * version_number = 0) is left out, unpacked repeated floats are written packed, fields go
 * out by number whatever order they came in. */
static void test_defaults_and_packing_normalised(void **state)
{
    (void)state;
    const float a = 1.0f, b = 2.0f;
    struct wire sent = {.n = 0}, want = {.n = 0};
    put_tag(&sent, 5, 5); /* float_val, unpacked */
    put_bytes(&sent, &a, 4);
    put_tag(&sent, 3, 0); /* version_number = 0 */
    put_varint(&sent, 0);
    put_tag(&sent, 1, 0); /* dtype = DT_INVALID (0) */
    put_varint(&sent, 0);
    put_tag(&sent, 5, 5);
    put_bytes(&sent, &b, 4);
    put_tag(&sent, 1, 0); /* dtype again: the last wins */
    put_varint(&sent, TENSORFLOW__DATA_TYPE__DT_FLOAT);

    put_tag(&want, 1, 0);
    put_varint(&want, TENSORFLOW__DATA_TYPE__DT_FLOAT);
    put_tag(&want, 5, 2); /* float_val, packed */
    put_varint(&want, 8);
    put_bytes(&want, &a, 4);
    put_bytes(&want, &b, 4);

    size_t n;
    uint8_t *again = repack(&tensorflow__tensor_proto__descriptor, sent.b, sent.n, &n);
    assert_bytes_equal(again, n, want.b, want.n);
    free(again);
}

/* A sub-message sent twice is merged (as C++ does); a oneof keeps its last member. */
static void test_merge_and_oneof_last_wins(void **state)
{
    (void)state;
    struct wire spec1 = {.n = 0}, spec2 = {.n = 0}, sent = {.n = 0}, ver = {.n = 0};
    put_len(&spec1, 1, "a", 1);
    put_tag(&ver, 1, 0);
    put_varint(&ver, 7);
    put_wire(&spec1, 2, &ver); /* version 7 ... */
    put_len(&spec2, 3, "sig", 3);
    put_len(&spec2, 4, "stable", 6); /* ... then version_label "stable" */
    put_wire(&sent, 1, &spec1);
    put_wire(&sent, 1, &spec2);

    Tensorflow__Serving__PredictRequest *r =
        tensorflow__serving__predict_request__unpack(NULL, sent.n, sent.b);
    assert_non_null(r);
    const Tensorflow__Serving__ModelSpec *s = r->model_spec;
    assert_string_equal(s->name, "a");
    assert_string_equal(s->signature_name, "sig");
    assert_int_equal(s->version_choice_case,
                     TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION_LABEL);
    assert_string_equal(s->version_label, "stable");
    tensorflow__serving__predict_request__free_unpacked(r, NULL);
}

/* A string is a C string to protobuf-c: a NUL byte inside ends it, and the bytes after it
 * are lost on the way back ("a\0b" and "a\0c" pack alike). A key built from the repacked
 * message must refuse such strings (the model server reads all of them). Bytes fields keep
 * every byte. */
static void test_string_with_nul_is_cut(void **state)
{
    (void)state;
    struct wire sent = {.n = 0}, want = {.n = 0};
    put_len(&sent, 1, "a\0b", 3);
    put_len(&want, 1, "a", 1);
    Tensorflow__Serving__ModelSpec *s =
        tensorflow__serving__model_spec__unpack(NULL, sent.n, sent.b);
    assert_non_null(s);
    assert_int_equal(strlen(s->name), 1);
    tensorflow__serving__model_spec__free_unpacked(s, NULL);
    size_t n;
    uint8_t *again = repack(&tensorflow__serving__model_spec__descriptor, sent.b, sent.n, &n);
    assert_bytes_equal(again, n, want.b, want.n);
    free(again);

    struct wire raw = {.n = 0};
    put_len(&raw, 7, "a\0\xff", 3);
    again = repack(&inference__model_infer_request__descriptor, raw.b, raw.n, &n);
    assert_bytes_equal(again, n, raw.b, raw.n);
    free(again);
}

/* ------------------------------------------------------------------ KServe v2 ModelInfer */

static void test_model_infer_request_round_trip(void **state)
{
    (void)state;
    Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
    req.model_name = lit("simple");
    req.model_version = lit("2");
    req.id = lit("req-7");

    Inference__InferParameter prio = INFERENCE__INFER_PARAMETER__INIT;
    prio.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
    prio.int64_param = 3;
    Inference__ModelInferRequest__ParametersEntry pe =
        INFERENCE__MODEL_INFER_REQUEST__PARAMETERS_ENTRY__INIT;
    pe.key = lit("priority");
    pe.value = &prio;
    Inference__ModelInferRequest__ParametersEntry *pes[] = {&pe};
    req.n_parameters = 1;
    req.parameters = pes;

    /* INPUT0: INT32 [1, 4] in contents; INPUT1: BYTES [2] in contents. */
    int32_t ints[] = {1, -2, 3, 2147483647};
    int64_t shape0[] = {1, 4}, shape1[] = {2};
    Inference__InferTensorContents c0 = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    c0.n_int_contents = 4;
    c0.int_contents = ints;
    ProtobufCBinaryData strs[] = {{2, (uint8_t *)"ab"}, {3, (uint8_t *)"c\0d"}};
    Inference__InferTensorContents c1 = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    c1.n_bytes_contents = 2;
    c1.bytes_contents = strs;
    Inference__ModelInferRequest__InferInputTensor in[2] = {
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT,
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT};
    in[0].name = lit("INPUT0");
    in[0].datatype = lit("INT32");
    in[0].n_shape = 2;
    in[0].shape = shape0;
    in[0].contents = &c0;
    in[1].name = lit("INPUT1");
    in[1].datatype = lit("BYTES");
    in[1].n_shape = 1;
    in[1].shape = shape1;
    in[1].contents = &c1;
    Inference__ModelInferRequest__InferInputTensor *ins[] = {&in[0], &in[1]};
    req.n_inputs = 2;
    req.inputs = ins;
    Inference__ModelInferRequest__InferRequestedOutputTensor out =
        INFERENCE__MODEL_INFER_REQUEST__INFER_REQUESTED_OUTPUT_TENSOR__INIT;
    out.name = lit("OUTPUT0");
    Inference__ModelInferRequest__InferRequestedOutputTensor *outs[] = {&out};
    req.n_outputs = 1;
    req.outputs = outs;

    size_t n;
    uint8_t *wire = pack(&req.base, &n);
    Inference__ModelInferRequest *r = inference__model_infer_request__unpack(NULL, n, wire);
    assert_non_null(r);
    assert_string_equal(r->model_name, "simple");
    assert_string_equal(r->model_version, "2");
    assert_string_equal(r->id, "req-7");
    assert_int_equal(r->n_parameters, 1);
    assert_string_equal(r->parameters[0]->key, "priority");
    assert_int_equal(r->parameters[0]->value->parameter_choice_case,
                     INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM);
    assert_int_equal(r->parameters[0]->value->int64_param, 3);
    assert_int_equal(r->n_inputs, 2);
    assert_string_equal(r->inputs[0]->name, "INPUT0");
    assert_string_equal(r->inputs[0]->datatype, "INT32");
    assert_int_equal(r->inputs[0]->n_shape, 2);
    assert_memory_equal(r->inputs[0]->shape, shape0, sizeof shape0);
    assert_int_equal(r->inputs[0]->n_parameters, 0);
    assert_non_null(r->inputs[0]->contents);
    assert_int_equal(r->inputs[0]->contents->n_int_contents, 4);
    assert_memory_equal(r->inputs[0]->contents->int_contents, ints, sizeof ints);
    assert_string_equal(r->inputs[1]->name, "INPUT1");
    assert_string_equal(r->inputs[1]->datatype, "BYTES");
    assert_int_equal(r->inputs[1]->n_shape, 1);
    assert_int_equal(r->inputs[1]->shape[0], 2);
    assert_int_equal(r->inputs[1]->contents->n_bytes_contents, 2);
    assert_int_equal(r->inputs[1]->contents->bytes_contents[0].len, 2);
    assert_memory_equal(r->inputs[1]->contents->bytes_contents[0].data, "ab", 2);
    assert_int_equal(r->inputs[1]->contents->bytes_contents[1].len, 3);
    assert_memory_equal(r->inputs[1]->contents->bytes_contents[1].data, "c\0d", 3);
    assert_int_equal(r->n_outputs, 1);
    assert_string_equal(r->outputs[0]->name, "OUTPUT0");
    assert_int_equal(r->outputs[0]->n_parameters, 0);
    assert_int_equal(r->n_raw_input_contents, 0);
    size_t n2;
    uint8_t *again = pack(&r->base, &n2);
    assert_bytes_equal(again, n2, wire, n);
    free(again);
    inference__model_infer_request__free_unpacked(r, NULL);
    free(wire);
}

/* The raw form: tensors without contents, their bytes in raw_input_contents, in order; an
 * unknown field appended (15) is kept and written back in place. */
static void test_model_infer_raw_contents_and_unknown_field(void **state)
{
    (void)state;
    Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
    req.model_name = lit("simple");
    req.id = lit("raw-1");
    int64_t shape[] = {1, 2};
    Inference__ModelInferRequest__InferInputTensor in[2] = {
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT,
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT};
    in[0].name = lit("INPUT0");
    in[0].datatype = lit("FP32");
    in[1].name = lit("INPUT1");
    in[1].datatype = lit("UINT8");
    for (int i = 0; i < 2; i++) {
        in[i].n_shape = 2;
        in[i].shape = shape;
    }
    Inference__ModelInferRequest__InferInputTensor *ins[] = {&in[0], &in[1]};
    req.n_inputs = 2;
    req.inputs = ins;
    const float fp[2] = {1.5f, -0.0f};
    ProtobufCBinaryData raw[] = {{sizeof fp, (uint8_t *)fp}, {2, (uint8_t *)"\0\xff"}};
    req.n_raw_input_contents = 2;
    req.raw_input_contents = raw;

    size_t n;
    uint8_t *packed = pack(&req.base, &n);
    struct wire w = {.n = 0};
    put_bytes(&w, packed, n);
    put_len(&w, 15, "x", 1);

    Inference__ModelInferRequest *r = inference__model_infer_request__unpack(NULL, w.n, w.b);
    assert_non_null(r);
    assert_string_equal(r->id, "raw-1");
    assert_string_equal(r->model_version, "");
    assert_int_equal(r->n_inputs, 2);
    assert_string_equal(r->inputs[0]->datatype, "FP32");
    assert_null(r->inputs[0]->contents);
    assert_string_equal(r->inputs[1]->datatype, "UINT8");
    assert_null(r->inputs[1]->contents);
    assert_int_equal(r->n_raw_input_contents, 2);
    assert_int_equal(r->raw_input_contents[0].len, sizeof fp);
    assert_memory_equal(r->raw_input_contents[0].data, fp, sizeof fp);
    assert_int_equal(r->raw_input_contents[1].len, 2);
    assert_memory_equal(r->raw_input_contents[1].data, "\0\xff", 2);
    assert_int_equal(r->base.n_unknown_fields, 1);
    assert_int_equal(r->base.unknown_fields[0].tag, 15);
    size_t n2;
    uint8_t *again = pack(&r->base, &n2);
    assert_bytes_equal(again, n2, w.b, w.n);
    free(again);
    inference__model_infer_request__free_unpacked(r, NULL);
    free(packed);
}

/* A oneof member the proto does not declare (Triton's double_param, 4, in InferParameter)
 * is an unknown field beside the declared member: bool_param then double_param (Triton
 * reads the double) and double_param then bool_param (Triton reads the bool) pack alike.
 * The canonical form must keep such a message's order, or refuse it. */
static void test_unknown_oneof_member_loses_its_order(void **state)
{
    (void)state;
    const double d = 0.5;
    struct wire bool_first = {.n = 0}, double_first = {.n = 0};
    put_tag(&bool_first, 1, 0);
    put_varint(&bool_first, 1);
    put_tag(&bool_first, 4, 1);
    put_bytes(&bool_first, &d, 8);
    put_tag(&double_first, 4, 1);
    put_bytes(&double_first, &d, 8);
    put_tag(&double_first, 1, 0);
    put_varint(&double_first, 1);

    size_t n1, n2;
    uint8_t *a = repack(&inference__infer_parameter__descriptor, bool_first.b, bool_first.n, &n1);
    uint8_t *b =
        repack(&inference__infer_parameter__descriptor, double_first.b, double_first.n, &n2);
    assert_bytes_equal(a, n1, b, n2);
    assert_bytes_equal(a, n1, bool_first.b, bool_first.n);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_predict_request_round_trip),
        cmocka_unit_test(test_predict_unknown_fields_kept),
        cmocka_unit_test(test_predict_unknown_field_in_map_value_kept),
        cmocka_unit_test(test_unknown_fields_written_after_known),
        cmocka_unit_test(test_map_entries_kept_as_sent),
        cmocka_unit_test(test_defaults_and_packing_normalised),
        cmocka_unit_test(test_merge_and_oneof_last_wins),
        cmocka_unit_test(test_string_with_nul_is_cut),
        cmocka_unit_test(test_model_infer_request_round_trip),
        cmocka_unit_test(test_model_infer_raw_contents_and_unknown_field),
        cmocka_unit_test(test_unknown_oneof_member_loses_its_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
