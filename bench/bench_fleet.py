"""Fleet convergence: how long after ``pyengine fleet publish`` returns every core runs the new
version, with announcements over MQTT versus polling the bucket alone (the fallback), side by
side in one run; and the cost of checking a document's signature.

N real cores (separate processes and roots) follow one fleet in a loopback S3 server (moto's
server mode) and a Mosquitto broker on a loopback port. Half the rounds use cores that hear
announcements (``--fleet-poll 60``), the other half cores that only poll (``--fleet-poll 5``).
There is no target in the issue; the table shows what announcements buy.

Writes bench/results/fleet.md.

Usage: python bench/bench_fleet.py [--cores 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import timeit
import uuid

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT_DIR)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT_DIR, "tests"))
from common import write_markdown  # noqa: E402
from deploy_fixtures import aws_env, free_port, start_moto_server, wait_port  # noqa: E402
from machine import describe  # noqa: E402

from pyengine import fleet as fl  # noqa: E402
from pyengine.common.aws import AwsSettings  # noqa: E402
from pyengine.fleet import enrollment  # noqa: E402

HANDLER = "def function_handler(event, context):\n    return TAG\n"


def write_group(base: str, tag: str) -> str:
    src = os.path.join(base, "sources", f"m-{tag}.tar.gz")
    os.makedirs(os.path.dirname(src), exist_ok=True)
    payload = os.path.join(base, "version.txt")
    with open(payload, "w") as fh:
        fh.write(tag)
    with tarfile.open(src, "w:gz") as tf:
        tf.add(payload, arcname="version.txt")
    code = os.path.join(base, "functions", "report")
    os.makedirs(code, exist_ok=True)
    with open(os.path.join(code, "handler.py"), "w") as fh:
        fh.write(f"TAG = {tag!r}\n{HANDLER}")
    group = {"name": "bench", "resources": [{"id": "m", "model": {
        "source": src, "destination": os.path.join(base, "dest", "${PYENGINE_CORE_NAME}", "m")}}],
        "functions": [{"name": "report", "handler": "handler.function_handler",
                       "code": "./functions/report", "resources": [{"id": "m"}]}]}
    path = os.path.join(base, "group.json")
    with open(path, "w") as fh:
        json.dump(group, fh)
    return path


def converge(fleet: fl.Fleet, enrolled: enrollment.Enrollment, names: list[str], version: int,
             timeout: float = 120) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        st = enrollment.statuses(fleet, enrolled).verified
        if all(st.get(n, {}).get("version") == version and st[n].get("state") == "applied"
               for n in names):
            return time.monotonic() - t0
        time.sleep(0.05)
    raise TimeoutError(f"cores did not reach version {version}")


def run_mode(base: str, endpoint: str, broker: int, key: fl.SigningKey, key_path: str,
             mode: str, cores: int, rounds: int) -> list[float]:
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket)
    uri = f"s3://{bucket}/fleet"
    fleet = fl.Fleet.parse(uri, AwsSettings(endpoint))
    names = [f"{mode}-{i}" for i in range(cores)]
    procs = []
    for n in names:
        d = os.path.join(base, mode, n)
        os.makedirs(d)
        args = ["--fleet", uri, "--core-name", n, "--trust", f"{key_path}.pub",
                "--s3-endpoint", endpoint, "--port", "0", "--root", os.path.join(d, "root")]
        if mode == "mqtt":  # a client id per core, as on separate devices
            config = os.path.join(d, "core.json")
            with open(config, "w") as fh:
                json.dump({"mqtt": {"host": "127.0.0.1", "port": broker,
                                    "client_id": f"pyengine-{n}"}}, fh)
            args += ["--fleet-poll", "60", "--config", config]
        else:
            args += ["--fleet-poll", "5"]
        env = dict(os.environ, PYTHONPATH=ROOT_DIR)
        log = open(os.path.join(d, "core.log"), "wb")  # noqa: SIM115 - open while it runs
        procs.append((subprocess.Popen([sys.executable, "-m", "pyengine", "core", "start",
                                        *args], stdout=log, stderr=subprocess.STDOUT,
                                       env=env), log))
    try:
        t0 = time.monotonic()
        while set(fleet.status_names()) != set(names):
            if time.monotonic() - t0 > 120:
                raise TimeoutError("cores did not register")
            time.sleep(0.1)
        fl.enroll(fleet, key, add={  # each core's status key, made at its first start
            n: fl.TrustedKey.load(os.path.join(base, mode, n, "root", "fleet", "core.pem.pub"))
            for n in names})
        enrolled = enrollment.read(fleet, [key.public])
        group_dir = os.path.join(base, mode, "group")
        os.makedirs(group_dir)
        times = []
        for r in range(rounds + 1):  # the first round installs from nothing: not counted
            doc = fl.publish(write_group(group_dir, f"{mode}-{r}"), fleet, key,
                             mqtt=f"127.0.0.1:{broker}" if mode == "mqtt" else None)
            dt = converge(fleet, enrolled, names, int(doc["version"]))
            if r:
                times.append(dt)
            print(f"{mode} round {r}: {dt:.2f} s", flush=True)
        return times
    finally:
        for p, log in procs:
            p.terminate()
            p.wait(30)
            log.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cores", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    aws_env()
    base = tempfile.mkdtemp(prefix="pyengine-bench-fleet-")
    os.chmod(base, 0o755)
    moto_port, mqtt_port = free_port(), free_port()
    moto = start_moto_server(moto_port)
    conf = os.path.join(base, "mosquitto.conf")
    with open(conf, "w") as fh:
        fh.write(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                 + ("user root\n" if os.geteuid() == 0 else ""))
    mosq = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", conf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(moto_port)
        wait_port(mqtt_port)
        endpoint = f"http://127.0.0.1:{moto_port}"
        key_path = os.path.join(base, "fleet.pem")
        fl.keygen(key_path)
        key = fl.SigningKey(key_path)
        res = {m: run_mode(base, endpoint, mqtt_port, key, key_path, m, args.cores,
                           args.rounds) for m in ("mqtt", "poll")}
        env = json.dumps(key.seal({"payload": "x" * 4000})).encode()
        trusted = [key.public]
        n = 2000
        verify_us = timeit.timeit(lambda: fl.open_envelope(env, trusted), number=n) / n * 1e6
    finally:
        moto.terminate()
        mosq.terminate()
        moto.wait(10)
        mosq.wait(10)
        shutil.rmtree(base, ignore_errors=True)
    lines = [
        "# Fleet convergence", "",
        describe(), "",
        f"Generated by `python bench/bench_fleet.py --cores {args.cores} --rounds {args.rounds}` "
        f"on {time.strftime('%Y-%m-%d')}.", "",
        f"{args.cores} cores (separate processes and roots) on this machine, a loopback moto S3 "
        "server and a Mosquitto broker; one small model package and one function per version. "
        f"Seconds from `publish` returning until every core reports the version applied "
        f"(its new workers running), {args.rounds} rounds each.", "",
        "| cores hear of documents by | median s | min s | max s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for m, label in (("mqtt", "MQTT announcement (poll 60 s as fallback)"),
                     ("poll", "polling the bucket every 5 s")):
        t = res[m]
        lines.append(f"| {label} | {statistics.median(t):.2f} | {min(t):.2f} | {max(t):.2f} |")
    lines += ["", f"Checking a document's signature (Ed25519 over a 4 kB payload, then JSON "
              f"parsing): {verify_us:.0f} us.", "",
              "No speed target in the issue; announcements bound convergence by the deploy "
              "itself instead of the poll interval."]
    write_markdown("fleet", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
