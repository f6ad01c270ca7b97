/* The API families: which a path takes, what each means, and when a generation is
 * deterministic (the rule README's table states). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "predcache/adapter.h"

static void test_by_path(void **state)
{
    (void)state;
    static const struct {
        const char *path;
        enum pc_adapter api;
    } cases[] = {
        {"/v1/models/m:predict", PC_ADAPTER_TFSERVING},
        {"/v1/models/m/versions/3:classify", PC_ADAPTER_TFSERVING},
        {"/v1/models/m", PC_ADAPTER_JSON}, /* the status endpoint: not a predict path */
        {"/v2/models/m/infer", PC_ADAPTER_KSERVE_V2},
        {"/v2/models/m/versions/2/infer", PC_ADAPTER_KSERVE_V2},
        {"/v2/models/m/ready", PC_ADAPTER_JSON},
        {"/predictions/resnet", PC_ADAPTER_TORCHSERVE},
        {"/predictions/resnet/2.0", PC_ADAPTER_TORCHSERVE},
        {"/v1/chat/completions", PC_ADAPTER_OPENAI},
        {"/v1/completions", PC_ADAPTER_OPENAI},
        {"/v1/embeddings", PC_ADAPTER_OPENAI},
        {"/openai/deployments/x/chat/completions", PC_ADAPTER_OPENAI},
        {"/api/embed", PC_ADAPTER_OLLAMA},
        {"/api/embeddings", PC_ADAPTER_OLLAMA},
        {"/api/generate", PC_ADAPTER_OLLAMA},
        {"/api/chat", PC_ADAPTER_OLLAMA},
        {"/embed", PC_ADAPTER_TEI},
        {"/rerank", PC_ADAPTER_TEI},
        {"/predict", PC_ADAPTER_JSON},
        {"/", PC_ADAPTER_JSON},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (pc_adapter_by_path(cases[i].path) != cases[i].api)
            fail_msg("%s: %s, not %s", cases[i].path,
                     pc_adapter_names[pc_adapter_by_path(cases[i].path)],
                     pc_adapter_names[cases[i].api]);
    }
    assert_string_equal(pc_adapter_names[PC_ADAPTER_COUNT - 1], "raw");
    assert_null(pc_adapter_names[PC_ADAPTER_COUNT]);
}

static void test_views(void **state)
{
    (void)state;
    struct pc_adapter_view v;
    pc_adapter_view(PC_ADAPTER_AUTO, "/v1/models/m:regress", &v);
    assert_int_equal(v.api, PC_ADAPTER_TFSERVING);
    assert_int_equal(v.family, PC_FAMILY_TFS_EXAMPLES);
    assert_true(v.status_versions);
    pc_adapter_view(PC_ADAPTER_AUTO, "/v2/models/m/infer", &v);
    assert_int_equal(v.family, PC_FAMILY_KSERVE);
    assert_int_equal(v.n_noise, 1);
    assert_string_equal(v.noise[0], "id");
    pc_adapter_view(PC_ADAPTER_AUTO, "/predictions/m", &v);
    assert_true(v.boilerplate_cc);
    assert_false(v.status_versions);
    assert_false(v.completion);
    assert_int_equal(v.n_noise, 0); /* its handler reads the whole body */
    pc_adapter_view(PC_ADAPTER_AUTO, "/v1/chat/completions", &v);
    assert_true(v.completion);
    assert_false(v.stream_default);
    pc_adapter_view(PC_ADAPTER_AUTO, "/v1/embeddings", &v);
    assert_false(v.completion);
    pc_adapter_view(PC_ADAPTER_AUTO, "/api/chat", &v);
    assert_true(v.completion);
    assert_true(v.stream_default);
    pc_adapter_view(PC_ADAPTER_AUTO, "/api/embed", &v);
    assert_false(v.completion);
    assert_false(v.stream_default);
    /* a route that names its family wins over the path */
    pc_adapter_view(PC_ADAPTER_RAW, "/v1/models/m:predict", &v);
    assert_int_equal(v.api, PC_ADAPTER_RAW);
    assert_int_equal(v.family, PC_FAMILY_RAW);
    assert_int_equal(v.n_noise, 0);
    pc_adapter_view(PC_ADAPTER_TORCHSERVE, "/infer", &v);
    assert_int_equal(v.api, PC_ADAPTER_TORCHSERVE);
    assert_true(v.boilerplate_cc);
    pc_adapter_view(PC_ADAPTER_JSON, "/v2/models/m/infer", &v);
    assert_int_equal(v.family, PC_FAMILY_JSON);
    assert_false(v.status_versions);
    pc_adapter_view((enum pc_adapter)99, "/predictions/m", &v); /* out of range: by path */
    assert_int_equal(v.api, PC_ADAPTER_TORCHSERVE);
}

static enum pc_reason judge(const char *path, const char *body, int greedy)
{
    struct pc_adapter_view v;
    pc_adapter_view(PC_ADAPTER_AUTO, path, &v);
    return pc_adapter_judge_request(&v, body, strlen(body), greedy);
}

static void test_deterministic(void **state)
{
    (void)state;
    const char *chat = "/v1/chat/completions";
    static const struct {
        const char *body;
        int greedy;
        int deterministic;
    } cases[] = {
        {"{\"temperature\":0}", 0, 1},
        {"{\"temperature\":0.0,\"n\":1}", 0, 1},
        {"{\"temperature\":-0e5}", 0, 1},
        {"{\"temperature\":0, \"seed\": 7, \"stream\": true}", 0, 1},
        {"{\"temperature\":1e-400}", 0, 1}, /* a double reader's zero too */
        {"{\"temperature\":0.2}", 0, 0},
        {"{\"temperature\":\"0\"}", 0, 0}, /* a string: not the number the rule asks */
        {"{\"temperature\":0,\"n\":2}", 0, 0},
        {"{\"temperature\":0,\"n\":\"1\"}", 0, 0},
        {"{\"temperature\":0,\"n\":null}", 0, 1},
        {"{}", 0, 0},                     /* absent: the server samples */
        {"{}", 1, 1},                     /* unless the route says it is greedy */
        {"{\"temperature\":null}", 0, 0}, /* null: the server's default */
        {"{\"temperature\":null}", 1, 1},
        {"{\"temperature\":0.7}", 1, 0},
        {"{\"temperature\":1,\"temperature\":0}", 0, 1}, /* the last, as Python reads */
        {"not json", 0, 0},
        {"", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum pc_reason r = judge(chat, cases[i].body, cases[i].greedy);
        enum pc_reason want = cases[i].deterministic ? PC_REASON_NONE : PC_REASON_NON_DETERMINISTIC;
        if (r != want)
            fail_msg("%s (greedy %d): %s", cases[i].body, cases[i].greedy, pc_reason_token(r));
    }
    /* Ollama: options.temperature; "n" is not its field */
    assert_int_equal(judge("/api/generate", "{\"options\":{\"temperature\":0}}", 0),
                     PC_REASON_NONE);
    assert_int_equal(judge("/api/chat", "{\"options\":{\"temperature\":0},\"n\":3}", 0),
                     PC_REASON_NONE);
    assert_int_equal(judge("/api/generate", "{\"temperature\":0}", 0), PC_REASON_NON_DETERMINISTIC);
    assert_int_equal(judge("/api/generate", "{\"options\":{\"top_k\":1}}", 0),
                     PC_REASON_NON_DETERMINISTIC);
    assert_int_equal(judge("/api/generate", "{\"options\":{\"top_k\":1}}", 1), PC_REASON_NONE);
    assert_int_equal(judge("/api/generate", "{\"options\":null}", 1), PC_REASON_NONE);
    assert_int_equal(judge("/api/generate", "{\"options\":7}", 0), PC_REASON_NON_DETERMINISTIC);
    /* not generations: never judged */
    assert_int_equal(judge("/v1/embeddings", "{\"temperature\":1}", 0), PC_REASON_NONE);
    assert_int_equal(judge("/api/embed", "{}", 0), PC_REASON_NONE);
    assert_int_equal(judge("/predict", "{\"temperature\":1}", 0), PC_REASON_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_by_path),
        cmocka_unit_test(test_views),
        cmocka_unit_test(test_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
