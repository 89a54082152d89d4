"""Run the engine supervisor (serving.supervisor) until Ctrl-C or SIGTERM: one vLLM process per
served model version, swapped blue/green on promotion. `make run` starts it beside the web
server and the worker when the engine is vLLM."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Start and swap the vLLM engines that serve the promoted policies (RLHF_SERVING_ENGINE=vllm)."

    def add_arguments(self, parser):
        parser.add_argument("--tick", type=float, default=1.0, help="seconds between checks of the registry")

    def handle(self, *args, tick: float, **options):
        from serving.engine_choice import VLLM, serving_engine
        from serving.supervisor import EngineSupervisor

        choice = serving_engine()
        if choice.name != VLLM:
            raise CommandError(f"the inference engine here is {choice.name} ({choice.why}); run_engines manages "
                               "vLLM only (RLHF_SERVING_ENGINE=vllm)")
        if choice.problem:
            raise CommandError(f"vLLM cannot run: {choice.problem}")
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        supervisor = EngineSupervisor(tick_seconds=tick)
        self.stdout.write(f"engine supervisor {supervisor.name}: up to {supervisor.max_engines} vLLM engines; "
                          f"logs in {supervisor.log_dir}")
        supervisor.run(stop)  # in the main thread, which lives as long as the engines
        self.stdout.write("engine supervisor stopped")
