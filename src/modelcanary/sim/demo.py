"""``modelcanary demo``: the incident this project exists for, end to end on the embedded stack.

Trains a baseline and a candidate fraud model, registers them in a local MLflow registry
(champion and challenger), starts ``modelcanary serve`` as its own process, starts a rollout, and
drives live traffic with delayed labels through the real HTTP gateway until the controller decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import io
import logging
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import numpy as np

from modelcanary.cli.workspace import Workspace
from modelcanary.controller.operations import run_command, start_rollout
from modelcanary.domain.errors import Conflict
from modelcanary.domain.state import RolloutState
from modelcanary.engine.decide import Command
from modelcanary.sim.fraud import BASELINE_FEATURES, CANDIDATE_FEATURES, FEATURES, live_is_drifted, make_transactions

MODEL_NAME = "fraud"
TRAFFIC_DEADLINE_S = 100.0


def demo_spec() -> str:
    return files("modelcanary.sim").joinpath("demo-rollout.yaml").read_text()


def register_models(space: Workspace, *, seed: int = 7) -> dict[str, float]:
    """Train both models and register them as fraud@champion and fraud@challenger."""
    import mlflow
    from mlflow.models import infer_signature

    from modelcanary.sim.fraud import train_models

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")
    models = train_models(seed=seed)
    quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
    client = space.registry().client
    # the runs are logged through MLflow's fluent API, which reads the global URIs
    mlflow.set_tracking_uri(space.registry_uri)
    mlflow.set_registry_uri(space.registry_uri)
    experiment = client.get_experiment_by_name("modelcanary-demo")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment("modelcanary-demo", artifact_location=space.artifacts.as_uri())
    )
    sample, _ = make_transactions(200, rng=np.random.default_rng(seed), drifted=False)
    for role, model, features, alias in (
        ("baseline", models.baseline, BASELINE_FEATURES, "champion"),
        ("candidate", models.candidate, CANDIDATE_FEATURES, "challenger"),
    ):
        inputs = sample[list(features)]
        # MLflow prints its registration chatter; the demo says what matters itself
        with quiet[0], quiet[1], mlflow.start_run(experiment_id=experiment_id, run_name=f"fraud-{role}"):
            mlflow.log_metrics({key: value for key, value in models.offline.items() if key.startswith(role)})
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=MODEL_NAME,
                pyfunc_predict_fn="predict_proba",
                signature=infer_signature(inputs, model.predict_proba(inputs)),
            )
        client.set_registered_model_alias(MODEL_NAME, alias, str(info.registered_model_version))
    return models.offline


@dataclass
class Traffic:
    """What the simulated clients saw."""

    served: dict[str, int] = field(default_factory=lambda: {"baseline": 0, "candidate": 0})
    failed: int = 0
    labels_sent: int = 0
    pending_labels: list[tuple[float, str, int]] = field(default_factory=list)  # (due, prediction id, label)


async def _client(
    session: Any,
    base: str,
    traffic: Traffic,
    rows: list[dict[str, float]],
    labels: np.ndarray,
    worker: int,
    stop: asyncio.Event,
    rng: np.random.Generator,
) -> None:
    index = worker
    while not stop.is_set():
        row, label = rows[index % len(rows)], int(labels[index % len(rows)])
        headers = {"x-user-id": f"user-{rng.integers(20_000)}"}
        if index % 2:  # half the clients speak V2, half MLflow's scoring protocol
            body: dict[str, Any] = {
                "inputs": [{"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in row.items()]
            }
            url = f"{base}/v2/models/{MODEL_NAME}/infer"
        else:
            body, url = {"dataframe_records": [row]}, f"{base}/v1/endpoints/{MODEL_NAME}/invocations"
        index += 16
        try:
            async with session.post(url, json=body, headers=headers) as response:
                answer = await response.json()
                if response.status != 200:
                    traffic.failed += 1
                    await asyncio.sleep(0.05)
                    continue
        except OSError:
            traffic.failed += 1
            await asyncio.sleep(0.05)
            continue
        ids = answer["parameters"]["prediction_ids"].split(",") if "parameters" in answer else answer["prediction_ids"]
        traffic.served[response.headers["x-modelcanary-variant"]] += 1
        # ground truth arrives later: a chargeback takes a while
        heapq.heappush(traffic.pending_labels, (time.monotonic() + rng.exponential(0.5), ids[0], label))


async def _labeller(session: Any, base: str, traffic: Traffic, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(0.2)
        batch: list[dict[str, Any]] = []
        while traffic.pending_labels and traffic.pending_labels[0][0] <= time.monotonic() and len(batch) < 1000:
            _, prediction_id, label = heapq.heappop(traffic.pending_labels)
            batch.append({"prediction_id": prediction_id, "label": label})
        if batch:
            async with session.post(f"{base}/v1/feedback", json={"labels": batch}) as response:
                if response.status == 200:
                    traffic.labels_sent += (await response.json())["accepted"]


async def _drive(
    base: str, space: Workspace, rollout_id: str, scenario: str, show: Any
) -> tuple[RolloutState, Traffic]:
    import aiohttp

    rng = np.random.default_rng(2026)
    frame, labels = make_transactions(50_000, rng=rng, drifted=live_is_drifted(scenario))
    rows = frame[list(FEATURES)].to_dict(orient="records")
    traffic, stop = Traffic(), asyncio.Event()
    store = space.store()
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the gateway serves the endpoint once the controller has started it
            async with session.get(f"{base}/v2/models/{MODEL_NAME}") as response:
                if response.status == 200:
                    break
            await asyncio.sleep(0.2)
        tasks = [
            asyncio.create_task(
                _client(session, base, traffic, rows, labels, worker, stop, np.random.default_rng(worker))
            )
            for worker in range(16)
        ]
        tasks.append(asyncio.create_task(_labeller(session, base, traffic, stop)))
        deadline = time.monotonic() + TRAFFIC_DEADLINE_S
        state, _ = store.get(rollout_id)
        while not state.phase.is_terminal() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            state, _ = await asyncio.to_thread(store.get, rollout_id)
            show(state, traffic)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    if not state.phase.is_terminal():
        state = run_command(store, rollout_id, Command.ABORT, actor="demo (no decision before its deadline)")
    return state, traffic


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(space: Workspace, port: int) -> subprocess.Popen[bytes]:
    log = open(space.workdir / "serve.log", "ab")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelcanary",
            "-v",
            "serve",
            "--workdir",
            str(space.workdir),
            "--store",
            space.store_url,
            "--registry",
            space.registry_uri,
            "--port",
            str(port),
            "--tick",
            "0.5",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"modelcanary serve exited with {server.returncode}; see {space.workdir / 'serve.log'}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"modelcanary serve did not listen on port {port} within 60 s")


def _refuse_a_served_endpoint(space: Workspace) -> None:
    """Refuse, before training or registering anything, a work folder where an earlier demo's
    endpoint is served: the new models would be the champion in the registry while the endpoint
    serves the old one, and the rollout refused half-way (a rollout starts from what it serves)."""
    served = space.store().routes().get(MODEL_NAME)
    if served is not None:
        raise Conflict(
            f"work folder {space.workdir}: its endpoint {MODEL_NAME!r} already serves {served.baseline.uri} "
            "(an earlier demo's); the demo starts a new endpoint: give --workdir a new folder, or remove "
            "this one (`make demo` does, for ./.modelcanary)"
        )


def _refuse_a_taken_port(port: int) -> None:
    """Refuse, before training or registering anything, a port another process listens on: it
    would pass the server's readiness check and get the demo's traffic, while the server the demo
    started failed to bind it."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise Conflict(f"port {port} is taken ({exc.strerror}); give --port another, or none") from exc


def run_demo(*, scenario: str, space: Workspace, port: int = 0) -> dict[str, Any]:
    from rich.console import Console
    from rich.live import Live

    console = Console(stderr=True)
    started = time.monotonic()
    console.print(f"[bold]modelcanary demo[/] ({scenario}): work folder {space.workdir}")
    _refuse_a_served_endpoint(space)
    if port:
        _refuse_a_taken_port(port)
    with console.status("training and registering a baseline and a candidate fraud model"):
        offline = register_models(space)
    console.print(
        f"offline holdout accuracy: baseline {offline['baseline_accuracy']:.3f}, "
        f"candidate {offline['candidate_accuracy']:.3f} -> the candidate wins offline"
    )
    port = port or _free_port()
    server = _start_server(space, port)
    try:
        state = start_rollout(space.store(), space.registry(), demo_spec(), source="demo-rollout.yaml", actor="demo")
        console.print(
            f"rollout {state.id}: {state.baseline.uri} -> {state.candidate.uri}, live traffic "
            f"{'drifted' if live_is_drifted(scenario) else 'like the training data'}"
        )
        with Live(console=console, refresh_per_second=4, transient=True) as live:

            def show(current: RolloutState, traffic: Traffic) -> None:
                live.update(
                    f"phase [bold]{current.phase.value}[/], step {current.step + 1}, candidate at "
                    f"{current.weight:g}% | served: baseline {traffic.served['baseline']}, candidate "
                    f"{traffic.served['candidate']} | labels {traffic.labels_sent}\n{current.reason}"
                )

            state, traffic = asyncio.run(_drive(f"http://127.0.0.1:{port}", space, state.id, scenario, show))
    finally:
        server.terminate()
        server.wait(timeout=30)
    colour = "green" if state.phase.value == "promoted" else "red"
    console.print(f"[bold {colour}]{state.phase.value}[/] after {time.monotonic() - started:.0f} s: {state.reason}")
    console.print(
        f"served: baseline {traffic.served['baseline']}, candidate {traffic.served['candidate']}; "
        f"labels {traffic.labels_sent}; see `modelcanary rollout status {state.id} --workdir {space.workdir}`"
    )
    return {
        "scenario": scenario,
        "rollout_id": state.id,
        "final_phase": state.phase.value,
        "reason": state.reason,
        "steps_reached": state.step + 1,
        "candidate_requests": traffic.served["candidate"],
        "baseline_requests": traffic.served["baseline"],
        "labels_received": traffic.labels_sent,
        "failed_requests": traffic.failed,
        "offline": offline,
        "workdir": str(space.workdir),
        "seconds": round(time.monotonic() - started, 1),
    }
