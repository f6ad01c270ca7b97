"""The harness itself: things every other test relies on."""

from conftest import free_port


def test_free_port_never_hands_out_one_port_twice():
    # Two servers of one test given the same port collide (listen == admin_listen is
    # refused at start). 1000 draws from the ephemeral range repeat a port almost surely
    # unless the harness remembers what it handed out.
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)
