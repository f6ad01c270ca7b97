"""The cached gRPC methods through predcache: TF Serving Predict (Classify, Regress) and
KServe v2 ModelInfer. A miss goes to the gRPC model server and is stored; the same request
again is a HIT with the model server's counter unchanged and the same message; what the
model reads differently is another key; KServe's id is the requester's; Redis down still
answers; and an integrity run checks every answer against the request it answers."""
import random
import threading

import grpc
import requests

from conftest import free_port, wait_for
from grpc_harness import TFS, V2, call, expected_answer
from test_grpc_model_server import (IMAGES, WORDS, infer_request, predict_request, predictions,
                                    received)

pytest_plugins = ["grpc_harness"]


def start(start_predcache, grpc_model, **conf):
    gport = free_port()
    c = {"server": {"grpc_listen": "127.0.0.1:%d" % gport},
         "backend": {"grpc_url": "http://%s" % grpc_model.target}}
    for section, items in conf.items():
        c.setdefault(section, {}).update(items)
    p = start_predcache(conf=c)
    return p, grpc.insecure_channel("127.0.0.1:%d" % gport)


def xcache(rpc):
    md = dict(rpc.initial_metadata())
    md.update(dict(rpc.trailing_metadata() or ()))
    return md.get("x-cache")


def repeated(rpc):
    """A call repeated at once is answered from the cache: from Redis (HIT), or, when its
    lookup passed the first answer's SET still held back (store.h's held writes), from the
    flight that keeps that answer until the SET is acknowledged (COALESCED). Neither calls
    the model; the callers count its calls."""
    return xcache(rpc) in ("HIT", "COALESCED")

def right(method, req, resp):
    """None when resp is the model's answer to req (its predictions and what it read), else
    why not. The replayed message names the first requester's bytes (sha256): only what
    the model read (view_sha256) must be this request's."""
    want, err = expected_answer(method, req)
    if err is not None:
        return "the model refuses it: %s" % (err,)
    if method.endswith("Predict"):
        if predictions(resp) != predictions(want):
            return "other predictions"
    got, exp = received(resp), received(want)
    for k in ("method", "model", "view_sha256"):
        if got.get(k) != exp.get(k):
            return "received %s %r, not %r" % (k, got.get(k), exp.get(k))
    return None


def ordered_bytes(st, inputs, version, names):
    """A PredictRequest's bytes with its inputs map's entries in the order of names
    (protobuf writes a map in an order of its own: two messages concatenated are one,
    merged, with the entries in the order written)."""
    out = predict_request(st, inputs={names[0]: inputs[names[0]]},
                          version=version).SerializeToString()
    for name in names[1:]:
        part = predict_request(st, inputs={name: inputs[name]})
        part.ClearField("model_spec")
        out += part.SerializeToString()
    return out


def swapped_bytes(st, inputs, version):
    return ordered_bytes(st, inputs, version, sorted(inputs, reverse=True))


def test_miss_then_hit_with_the_counter_unchanged(start_predcache, grpc_model, grpc_stubs, redis):
    st = grpc_stubs
    p, ch = start(start_predcache, grpc_model)
    req = predict_request(st, inputs={"images": IMAGES, "words": WORDS}, version=1)
    first, rpc = call(ch, TFS + "Predict", req)
    assert xcache(rpc) == "MISS" and right(TFS + "Predict", req, first) is None
    assert grpc_model.count("Predict") == 1
    # stored after the answer, asynchronously
    wait_for(lambda: [k for k in redis.keys("predcache:v2:*") if not k.endswith(":lock")],
             what="the entry stored")
    again, rpc = call(ch, TFS + "Predict", req)
    assert xcache(rpc) == "HIT"
    assert again == first
    assert again.SerializeToString(deterministic=True) == \
        first.SerializeToString(deterministic=True)
    assert grpc_model.count("Predict") == 1
    # the same request, its map written in the other order (protobuf writes maps sorted:
    # two messages concatenated are one, merged): the same key
    both = {"images": IMAGES, "words": WORDS}
    swapped = ordered_bytes(st, both, 1, ["words", "images"])
    assert swapped != ordered_bytes(st, both, 1, ["images", "words"])
    third, rpc = call(ch, TFS + "Predict", swapped)
    assert xcache(rpc) == "HIT" and right(TFS + "Predict", swapped, third) is None
    # what the model reads differently: another key
    other = predict_request(st, inputs={"images": ("DT_FLOAT", [3, 2], [9.0] * 6),
                                        "words": WORDS}, version=1)
    resp, rpc = call(ch, TFS + "Predict", other)
    assert xcache(rpc) == "MISS" and right(TFS + "Predict", other, resp) is None
    assert grpc_model.count("Predict") == 2
    assert p.metric("predcache_grpc_calls_total", grpc_status="OK") == 4


def test_kserve_infer_replays_the_requesters_id(start_predcache, grpc_model, grpc_stubs):
    st = grpc_stubs
    p, ch = start(start_predcache, grpc_model)
    a = infer_request(st, rid="first")
    a.model_version = "1"
    ra, rpc = call(ch, V2 + "ModelInfer", a)
    assert xcache(rpc) == "MISS" and ra.id == "first"
    b = infer_request(st, rid="second")
    b.model_version = "1"
    rb, rpc = call(ch, V2 + "ModelInfer", b)
    assert repeated(rpc) and rb.id == "second"
    assert right(V2 + "ModelInfer", b, rb) is None
    c = infer_request(st, rid="")
    c.model_version = "1"
    rc, rpc = call(ch, V2 + "ModelInfer", c)
    assert repeated(rpc) and rc.id == ""
    assert grpc_model.count("ModelInfer") == 1


def test_credentials_isolate_and_redis_down_still_answers(start_predcache, grpc_model,
                                                          grpc_stubs, redis):
    st = grpc_stubs
    p, ch = start(start_predcache, grpc_model)
    req = predict_request(st, inputs={"images": IMAGES, "words": WORDS}, version=1)
    _, rpc = call(ch, TFS + "Predict", req, metadata=[("authorization", "Bearer a")])
    assert xcache(rpc) == "MISS"
    _, rpc = call(ch, TFS + "Predict", req, metadata=[("authorization", "Bearer b")])
    assert xcache(rpc) == "MISS"  # another credential: another key
    _, rpc = call(ch, TFS + "Predict", req, metadata=[("authorization", "Bearer a")])
    assert xcache(rpc) == "HIT"
    redis.stop()
    fresh = predict_request(st, inputs={"images": ("DT_FLOAT", [3, 2], [7.0] * 6),
                                        "words": WORDS}, version=1)
    resp, rpc = call(ch, TFS + "Predict", fresh)
    assert xcache(rpc) in ("BYPASS",) and right(TFS + "Predict", fresh, resp) is None


def test_a_request_that_does_not_decode_is_invalid_argument(start_predcache, grpc_model):
    p, ch = start(start_predcache, grpc_model)
    try:
        call(ch, TFS + "Predict", b"\xff\xff\xff\xff")
        raise AssertionError("no error")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_model.count("Predict") == 0


def test_identical_misses_coalesce(start_predcache, grpc_model, grpc_stubs):
    st = grpc_stubs
    p, ch = start(start_predcache, grpc_model, server={"workers": 1})
    grpc_model.control(delay_ms=400)
    req = predict_request(st, inputs={"images": IMAGES, "words": WORDS}, version=1)
    results = []
    lock = threading.Lock()

    def one():
        resp, rpc = call(ch, TFS + "Predict", req, timeout=20)
        with lock:
            results.append((xcache(rpc), right(TFS + "Predict", req, resp)))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 8 and all(r[1] is None for r in results), results
    assert sorted(r[0] for r in results).count("MISS") == 1, results
    assert grpc_model.count("Predict") == 1


def test_integrity_over_many_tensors(start_predcache, grpc_model, grpc_stubs):
    """2,000 calls over 400 distinct tensors (repeats, map orders, both
    services) on one channel and four threads: every answer is the model's answer to that
    request."""
    st = grpc_stubs
    p, ch = start(start_predcache, grpc_model)
    rng = random.Random(11)
    wrong, seen = [], {"HIT": 0, "MISS": 0, "COALESCED": 0}
    lock = threading.Lock()

    def make(i):
        k = rng.randrange(400)
        if k % 5 == 4:
            r = infer_request(st, rid="id-%d" % i)
            r.model_version = "1"
            r.inputs[0].contents.int_contents[0] = k
            return V2 + "ModelInfer", r
        vals = [float(k), float(k % 7), 1.0, 2.0, 3.0, float(k % 3)]
        inputs = {"images": ("DT_FLOAT", [3, 2], vals), "words": WORDS}
        if rng.random() < 0.3:
            return TFS + "Predict", swapped_bytes(st, inputs, 1)
        return TFS + "Predict", predict_request(st, inputs=inputs, version=1)

    work = [make(i) for i in range(2000)]

    errors = []

    def run(part):
        try:
            run_part(part)
        except Exception as e:  # noqa: BLE001 (reported below: a thread must not die mute)
            errors.append(repr(e))

    def run_part(part):
        for method, req in part:
            resp, rpc = call(ch, method, req, timeout=20)
            why = right(method, req, resp)
            if method.endswith("ModelInfer") and resp.id != req.id:
                why = "id %r, not %r" % (resp.id, req.id)
            with lock:
                seen[xcache(rpc)] = seen.get(xcache(rpc), 0) + 1
                if why is not None:
                    wrong.append((method, why))

    threads = [threading.Thread(target=run, args=(work[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    print("grpc integrity: wrong answers: %d of %d; %s" % (len(wrong), len(work), seen))
    assert not errors, errors[:3]
    assert not wrong, wrong[:5]
    assert sum(seen.values()) == len(work)
    assert seen["HIT"] > 1000
    for result in ("HIT", "MISS", "COALESCED"):  # the counters say what the answers said
        assert p.metric("predcache_grpc_cache_total", cache=result) == seen[result], result


def test_invalidation_reaches_grpc_entries(start_predcache, grpc_model, grpc_stubs):
    """POST /cache/invalidate?model=m on the admin port: the next gRPC call of model m is a
    MISS (its generation is in the key); model n's entry is untouched."""
    st = grpc_stubs
    p, ch = start(start_predcache, grpc_model)
    m = predict_request(st, model="m", inputs={"images": IMAGES, "words": WORDS}, version=1)
    n = predict_request(st, model="n", inputs={"images": IMAGES, "words": WORDS}, version=1)
    for req in (m, n):
        assert xcache(call(ch, TFS + "Predict", req)[1]) == "MISS"
        assert repeated(call(ch, TFS + "Predict", req)[1])
    calls = grpc_model.count("Predict")
    assert calls == 2
    r = requests.post(p.admin("/cache/invalidate?model=m"), timeout=10)
    assert r.status_code == 200, r.text
    wait_for(lambda: xcache(call(ch, TFS + "Predict", m)[1]) == "MISS",
             what="model m's entry out of reach")
    assert repeated(call(ch, TFS + "Predict", m)[1])  # stored anew
    assert xcache(call(ch, TFS + "Predict", n)[1]) == "HIT"
    assert grpc_model.count("Predict") == calls + 1
