#!/usr/bin/python3
"""Syntax and sanity checks of the Kubernetes manifests and the Dockerfile, with what Debian has
(python3-yaml; hadolint and kubeconform are not packaged). Each check here fails on a real mistake
seen in such files; none needs a cluster or a Docker daemon.

usage: check_manifests.py REPO_ROOT
"""
import glob
import os
import re
import sys

import yaml

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)


# ---- Kubernetes ---------------------------------------------------------------------------------

def containers_of(doc):
    """Every container spec in a Deployment/StatefulSet/MPIJob, with where it sits."""
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    templates = []
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        templates.append(("", spec.get("template")))
    elif kind == "MPIJob":
        for role, rs in (spec.get("mpiReplicaSpecs") or {}).items():
            templates.append((role, (rs or {}).get("template")))
    for role, tpl in templates:
        pod = (tpl or {}).get("spec") or {}
        for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
            yield role, pod, c


def check_k8s_doc(path, i, doc):
    where = f"{os.path.basename(path)} document {i}"
    if not isinstance(doc, dict):
        fail(f"{where}: not a mapping")
        return
    for key in ("apiVersion", "kind", "metadata"):
        if key not in doc:
            fail(f"{where}: no {key}")
    name = (doc.get("metadata") or {}).get("name")
    if not name or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", str(name)):
        fail(f"{where}: metadata.name {name!r} is not a DNS-1123 name")
    for role, pod, c in containers_of(doc):
        cwhere = f"{where} {role} container {c.get('name')}"
        if not c.get("name") or not c.get("image"):
            fail(f"{cwhere}: a container needs name and image")
        for arg in (c.get("command") or []) + (c.get("args") or []):
            if not isinstance(arg, str):
                fail(f"{cwhere}: command/args item {arg!r} is not a string (quote numbers)")
        for env in c.get("env") or []:
            if "password" in env.get("name", "").lower() or env.get("name") == "REDISCLI_AUTH":
                if "value" in env:
                    fail(f"{cwhere}: {env['name']} given as a literal value, not a secretKeyRef")
        text = " ".join(str(a) for a in (c.get("command") or []) + (c.get("args") or []))
        # A literal after requirepass or --password (a %s or $VAR filled in at run time is fine).
        if re.search(r"(--(redis-)?password(?!-file)|requirepass)[\s=]+(?![%$\"'\\])\S", text):
            fail(f"{cwhere}: a password on the command line")
        limits = (c.get("resources") or {}).get("limits") or {}
        if doc.get("kind") == "MPIJob" and role == "Worker" and "nvidia.com/gpu" not in limits:
            fail(f"{cwhere}: MPIJob workers must request nvidia.com/gpu")
    if doc.get("kind") == "MPIJob":
        check_mpijob(where, doc)


def check_mpijob(where, doc):
    spec = doc["spec"]
    slots = spec.get("slotsPerWorker")
    workers = spec["mpiReplicaSpecs"]["Worker"]
    launcher = spec["mpiReplicaSpecs"]["Launcher"]
    gpus = workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    if slots != gpus:
        fail(f"{where}: slotsPerWorker {slots} differs from the GPUs per worker {gpus}")
    cmd = launcher["template"]["spec"]["containers"][0]["command"]
    np_ = int(cmd[cmd.index("-np") + 1])
    tp = int(cmd[cmd.index("--tp") + 1])
    if np_ != tp or np_ != slots * workers.get("replicas", 1):
        fail(f"{where}: -np {np_}, --tp {tp} and workers x slots "
             f"{slots * workers.get('replicas', 1)} must agree")
    worker_pod = workers["template"]["spec"]
    hooks = worker_pod["containers"][0].get("lifecycle", {}).get("preStop", {})
    if "glm4v-drain.sh" not in " ".join(hooks.get("exec", {}).get("command", [])):
        fail(f"{where}: the worker has no preStop drain")
    if worker_pod.get("terminationGracePeriodSeconds", 30) < 300:
        fail(f"{where}: terminationGracePeriodSeconds too short for the drain")
    probes = [c.get("readinessProbe") for c in launcher["template"]["spec"]["containers"]] + \
             [c.get("readinessProbe") for c in worker_pod["containers"]]
    if not any(p and "glm4v-ready.sh" in " ".join(p.get("exec", {}).get("command", []))
               for p in probes):
        fail(f"{where}: no readiness probe on the liveness key")


def check_k8s(repo):
    paths = sorted(glob.glob(os.path.join(repo, "deploy/k8s/*.yaml")))
    if len(paths) < 3:
        fail(f"expected redis.yaml, redis-secret.yaml and the MPIJob in deploy/k8s, found {paths}")
    kinds = set()
    for path in paths:
        try:
            with open(path) as f:
                docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            fail(f"{path}: YAML error: {e}")
            continue
        if not docs:
            fail(f"{path}: no documents")
        for i, doc in enumerate(docs):
            check_k8s_doc(path, i, doc)
            if isinstance(doc, dict):
                kinds.add(doc.get("kind"))
    for kind in ("Deployment", "Service", "Secret", "MPIJob"):
        if kind not in kinds:
            fail(f"deploy/k8s has no {kind}")
    print(f"k8s: {len(paths)} files, kinds {sorted(k for k in kinds if k)}")


# ---- Dockerfile ---------------------------------------------------------------------------------

INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK",
                "SHELL", "MAINTAINER"}


def dockerfile_instructions(path):
    """(line number, INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf, start = [], "", 0
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if buf and line.lstrip().startswith("#"):
                continue  # comment lines inside a continued instruction are dropped by Docker
            if not buf:
                start = n
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            buf += line
            word, _, rest = buf.strip().partition(" ")
            out.append((start, word, rest.strip()))
            buf = ""
    if buf:
        fail(f"{path}: ends inside a continued instruction")
    return out


def check_dockerfile(repo):
    path = os.path.join(repo, "deploy/docker/Dockerfile")
    ins = dockerfile_instructions(path)
    for n, word, _ in ins:
        if word.upper() not in INSTRUCTIONS:
            fail(f"Dockerfile:{n}: unknown instruction {word}")
        elif word != word.upper():
            fail(f"Dockerfile:{n}: write instructions in upper case ({word})")
    first = [w for _, w, _ in ins if w.upper() != "ARG"]
    if not first or first[0].upper() != "FROM":
        fail("Dockerfile: the first instruction after ARGs must be FROM")
    stages = [i for i, (_, w, _) in enumerate(ins) if w.upper() == "FROM"]
    final = ins[stages[-1]:] if stages else ins
    user = None
    for n, word, args in final:
        w = word.upper()
        if w == "USER":
            user = args.split(":")[0]
        if w in ("CMD", "ENTRYPOINT"):
            if user is None or user in ("root", "0"):
                fail(f"Dockerfile:{n}: {w} runs as root; set USER to a non-root user before it")
    if user is None:
        fail("Dockerfile: the final stage never sets USER")
    if not any(w.upper() in ("CMD", "ENTRYPOINT") for _, w, _ in final):
        fail("Dockerfile: the final stage has no CMD or ENTRYPOINT")
    for n, word, args in ins:
        w = word.upper()
        if w == "FROM" and not re.match(r"^(--platform=\S+\s+)?\S+(\s+AS\s+\S+)?$", args, re.I):
            fail(f"Dockerfile:{n}: malformed FROM {args}")
        if w == "ADD" and re.search(r"https?://", args):
            fail(f"Dockerfile:{n}: ADD of a URL (downloads belong in a RUN with a checksum)")
        if w == "COPY" and "--from=" not in args:
            srcs = args.split()[:-1]
            for src in srcs:
                if src.startswith("--"):
                    continue
                if not glob.glob(os.path.join(repo, src)):
                    fail(f"Dockerfile:{n}: COPY source {src} is not in the build context")
        if w in ("CMD", "ENTRYPOINT") and args.startswith("["):
            try:
                yaml.safe_load(args)
            except yaml.YAMLError:
                fail(f"Dockerfile:{n}: {w} exec form is not valid JSON")
        if w in ("ENV", "RUN", "ARG") and re.search(r"PASSWORD=\S", args):
            fail(f"Dockerfile:{n}: a password baked into the image")
    print(f"Dockerfile: {len(ins)} instructions, {len(stages)} stage(s), final USER {user}")


def main():
    repo = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), "../.."))
    check_k8s(repo)
    check_dockerfile(repo)
    if failures:
        print(f"check_manifests: {len(failures)} failure(s)")
        return 1
    print("check_manifests: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
