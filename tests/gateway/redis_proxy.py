#!/usr/bin/env python3
"""A TCP proxy between glm4v-gateway and redis-server that loses connections on command, at the
exact moments the gateway tests need (test_gateway_fixes.sh):

  hold      every connection open now stops passing Redis's replies on (they are kept);
  sever     every held connection gets what was kept, then is closed: the gateway has read its
            last reply and finds the connection dead at its next command;
  lose-xadd the next XADD reaches Redis, its reply is dropped and that connection closed;
  lose-xadd-down  as lose-xadd, then every connection is closed and new ones are refused until
            "up" (Redis unreachable);
  up        accept connections again.

usage: redis_proxy.py REDIS_PORT PORT_FILE  (writes "PROXY_PORT CONTROL_PORT" to PORT_FILE; a
command is one line sent to the control port, answered "ok").
"""
import os
import socket
import sys
import threading

lock = threading.Lock()
conns = []
state = {"lose_xadd": False, "down_after": False, "refusing": False}


class Pair:
    def __init__(self, down, up):
        self.down, self.up = down, up
        self.held = False
        self.kept = b""
        self.xadd_sent = False
        self.closed = False

    def close(self):  # called with lock held
        if self.closed:
            return
        self.closed = True
        if self in conns:
            conns.remove(self)
        for s in (self.down, self.up):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def close_all():
    for p in list(conns):
        p.close()


def gateway_to_redis(p):
    while True:
        try:
            data = p.down.recv(65536)
        except OSError:
            data = b""
        with lock:
            if not data or p.closed:
                p.close()
                return
            if state["lose_xadd"] and b"XADD" in data:
                state["lose_xadd"] = False
                p.xadd_sent = True
            try:
                p.up.sendall(data)
            except OSError:
                p.close()
                return


def redis_to_gateway(p):
    while True:
        try:
            data = p.up.recv(65536)
        except OSError:
            data = b""
        with lock:
            if not data or p.closed:
                p.close()
                return
            if p.xadd_sent:  # the XADD ran; its reply never reaches the gateway
                p.close()
                if state["down_after"]:
                    state["down_after"] = False
                    state["refusing"] = True
                    close_all()
                return
            if p.held:
                p.kept += data
                continue
            try:
                p.down.sendall(data)
            except OSError:
                p.close()
                return


def control(cmd):
    with lock:
        if cmd == "hold":
            for p in conns:
                p.held = True
        elif cmd == "sever":
            for p in [p for p in conns if p.held]:
                try:
                    p.down.sendall(p.kept)
                except OSError:
                    pass
                p.close()
        elif cmd in ("lose-xadd", "lose-xadd-down"):
            state["lose_xadd"] = True
            state["down_after"] = cmd == "lose-xadd-down"
        elif cmd == "up":
            state["refusing"] = False
        else:
            return "unknown command"
    return "ok"


def serve_control(ctl):
    while True:
        c, _ = ctl.accept()
        with c:
            line = c.makefile("r").readline().strip()
            c.sendall((control(line) + "\n").encode())


def main():
    redis_port, port_file = int(sys.argv[1]), sys.argv[2]
    lst = socket.create_server(("127.0.0.1", 0))
    ctl = socket.create_server(("127.0.0.1", 0))
    with open(port_file + ".tmp", "w") as f:
        f.write(f"{lst.getsockname()[1]} {ctl.getsockname()[1]}\n")
    os.rename(port_file + ".tmp", port_file)
    threading.Thread(target=serve_control, args=(ctl,), daemon=True).start()
    while True:
        down, _ = lst.accept()
        with lock:
            refusing = state["refusing"]
        if refusing:
            down.close()
            continue
        try:
            up = socket.create_connection(("127.0.0.1", redis_port))
        except OSError:
            down.close()
            continue
        p = Pair(down, up)
        with lock:
            conns.append(p)
        threading.Thread(target=gateway_to_redis, args=(p,), daemon=True).start()
        threading.Thread(target=redis_to_gateway, args=(p,), daemon=True).start()


if __name__ == "__main__":
    main()
