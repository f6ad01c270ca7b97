#!/usr/bin/python3
"""Writes fuzz_h2srv's seed corpus (tests/fuzz/corpus/h2srv/): short HTTP/2 client sessions
of the gRPC port, each after fuzz_h2srv's two flag bytes (see the target's header).

Header blocks are HPACK literals without indexing and without Huffman coding (RFC 7541
6.2.2), apart from one seed's indexed static-table fields, so that a mutation of a name or
a value stays readable. Run it again after changing it: the files are committed.
    /usr/bin/python3 tests/fuzz/gen_h2_seeds.py
"""

import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "h2srv")

MAGIC = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20

# byte 0: its own preface (bit 0), max_body 16384 (bits 2-3 = 2), max_header 65536
# (bits 4-5 = 3), max_streams 100 (bits 6-7 = 3); byte 1: no input bound, seed 0.
OWN = 0x01
DEFAULT0 = OWN | 2 << 2 | 3 << 4 | 3 << 6


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


def hpack_int(value, prefix_bits, first=0):
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([first | value])
    out = [first | top]
    value -= top
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def literal(name, value):
    """Literal header field without indexing, new name, no Huffman."""
    name, value = name.encode(), value.encode()
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


def block(fields):
    return b"".join(literal(n, v) for n, v in fields)


def grpc_message(msg, compressed=0):
    return bytes([compressed]) + struct.pack(">I", len(msg)) + msg


def settings(*pairs):
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def request(path, extra=(), method="POST"):
    return [(":method", method), (":scheme", "http"), (":path", path),
            (":authority", "localhost:8501"), ("content-type", "application/grpc"),
            ("te", "trailers")] + list(extra)


PREDICT = "/tensorflow.serving.PredictionService/Predict"
INFER = "/inference.GRPCInferenceService/ModelInfer"
# A PredictRequest: model_spec { name: "m" }.
PREDICT_MSG = b"\x0a\x03\x0a\x01m"

SEEDS = {}


def seed(name, flags0, flags1, body, own_preface=True):
    if own_preface:
        body = MAGIC + settings() + body
    SEEDS[name] = bytes([flags0, flags1]) + body


# A unary call: HEADERS, then one DATA frame with the message and END_STREAM.
seed("unary", DEFAULT0, 0x00,
     frame(HEADERS, END_HEADERS, 1,
           block(request(PREDICT, [("grpc-timeout", "1S"), ("user-agent", "grpc-c/1.51")]))) +
     frame(DATA, END_STREAM, 1, grpc_message(PREDICT_MSG)))

# The same call with the preface put before it by the target (byte 0 bit 0 clear), SETTINGS
# with parameters and its ACK, and a second call whose message comes in two DATA frames.
seed("two_calls", DEFAULT0 & ~OWN, 0x10,
     settings((0x1, 4096), (0x3, 100), (0x4, 65535), (0x6, 16384)) +
     frame(SETTINGS, ACK, 0) +
     frame(HEADERS, END_HEADERS, 1, block(request(INFER, [("x-request-id", "abc-123")]))) +
     frame(DATA, END_STREAM, 1, grpc_message(b"\x0a\x01m\x12\x011")) +
     frame(HEADERS, END_HEADERS, 3, block(request(PREDICT, [("grpc-timeout", "250m")]))) +
     frame(DATA, 0, 3, grpc_message(PREDICT_MSG)[:4]) +
     frame(DATA, END_STREAM, 3, grpc_message(PREDICT_MSG)[4:]),
     own_preface=False)

# A call the client cancels: HEADERS, part of the body, RST_STREAM (CANCEL), then a call
# without a body (END_STREAM on HEADERS).
seed("rst_stream", DEFAULT0, 0x20,
     frame(HEADERS, END_HEADERS, 1, block(request(PREDICT))) +
     frame(DATA, 0, 1, grpc_message(PREDICT_MSG)[:3]) +
     frame(RST_STREAM, 0, 1, struct.pack(">I", 8)) +
     frame(HEADERS, END_HEADERS | END_STREAM, 3, block(request(PREDICT))))

# Flow control: WINDOW_UPDATE on the connection and on the stream, a PING, a PRIORITY.
seed("window_update", DEFAULT0, 0x30,
     frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20)) +
     frame(HEADERS, END_HEADERS, 1, block(request(PREDICT))) +
     frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 65535)) +
     frame(PING, 0, 0, b"12345678") +
     frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 15)) +
     frame(DATA, END_STREAM, 1, grpc_message(PREDICT_MSG)))

# A call, then GOAWAY (NO_ERROR, no server stream processed); byte 1 bit 3: the client's EOF after it.
seed("goaway", DEFAULT0, 0x48,
     frame(HEADERS, END_HEADERS, 1, block(request(PREDICT))) +
     frame(DATA, END_STREAM, 1, grpc_message(PREDICT_MSG)) +
     frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0) + b"bye"))

# A header block in HEADERS and CONTINUATION, with indexed static-table fields (:method
# POST = 3, :scheme http = 6) and a literal with an indexed name (:path = 4); padding and
# priority on the HEADERS frame.
head = b"\x83\x86" + b"\x04" + hpack_int(len(INFER), 7) + INFER.encode() + \
    block([(":authority", "h"), ("content-type", "application/grpc+proto"), ("te", "trailers"),
           ("grpc-timeout", "99999999n")])
pad = 3
seed("continuation", DEFAULT0, 0x50,
     frame(HEADERS, PADDED | PRIO, 1,
           bytes([pad]) + struct.pack(">IB", 0, 16) + head[:20] + b"\x00" * pad) +
     frame(CONTINUATION, END_HEADERS, 1, head[20:]) +
     frame(DATA, END_STREAM, 1, grpc_message(b"\x0a\x01m")))

# Not gRPC: GET without a content type.
seed("not_grpc", DEFAULT0, 0x60,
     frame(HEADERS, END_HEADERS | END_STREAM, 1,
           block([(":method", "GET"), (":scheme", "http"), (":path", "/"),
                  (":authority", "h")])))

# Over the bounds: max_body 64 (byte 0 bits 2-3 = 0) with a 200-byte message, then a call
# under the input budget's bound of 256 bytes (byte 1 bits 0-1 = 1).
seed("over_body", OWN | 0 << 2 | 3 << 4 | 3 << 6, 0x71,
     frame(HEADERS, END_HEADERS, 1, block(request(PREDICT))) +
     frame(DATA, 0, 1, grpc_message(b"x" * 200)[:100]) +
     frame(DATA, END_STREAM, 1, grpc_message(b"x" * 200)[100:]) +
     frame(HEADERS, END_HEADERS, 3, block(request(PREDICT))) +
     frame(DATA, END_STREAM, 3, grpc_message(PREDICT_MSG)))

# A header list over max_header 1024 (byte 0 bits 4-5 = 1), then a call with the client's
# trailers (HEADERS after DATA), and two messages in one body; the server stops accepting
# (GOAWAY) half-way (byte 1 bit 2).
seed("headers_trailers", OWN | 2 << 2 | 1 << 4 | 3 << 6, 0x84,
     frame(HEADERS, END_HEADERS | END_STREAM, 1,
           block(request(PREDICT, [("x-long", "v" * 1000)]))) +
     frame(HEADERS, END_HEADERS, 3, block(request(PREDICT))) +
     frame(DATA, 0, 3, grpc_message(PREDICT_MSG) + grpc_message(b"", compressed=1)) +
     frame(HEADERS, END_HEADERS | END_STREAM, 3, block([("x-trailer", "t")])))

# A stream error while a call is held: two calls without a body (END_STREAM on HEADERS),
# then a WINDOW_UPDATE that overflows the first stream's window (FLOW_CONTROL_ERROR): the
# server resets that stream while its call waits for an answer.
seed("window_overflow", DEFAULT0, 0x00,
     frame(HEADERS, END_HEADERS | END_STREAM, 1, block(request(PREDICT))) +
     frame(HEADERS, END_HEADERS | END_STREAM, 3, block(request(INFER))) +
     frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 0x7fffffff)))


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in sorted(SEEDS.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print("gen_h2_seeds: %d seeds in %s" % (len(SEEDS), os.path.relpath(OUT)))


if __name__ == "__main__":
    main()
