"""``plantwire``: one command line for every part (sim, edge, ingest, demo, check, score, kernels,
retention, install).

Subcommands import their part lazily, so ``plantwire check`` does not pay for numba or asyncua.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

USAGE = """plantwire <command> [options]

commands:
  sim CONFIG       serve a plant's signals over OPC-UA and Modbus TCP (simulator)
  edge CONFIG      run the edge gateway daemon
  ingest CONFIG    run the cloud ingestor (MQTT -> InfluxDB)
  alarms ...       open incidents, operator actions (ack|shelve|unshelve|oos|return|maintenance), EEMUA 191 report
  actions ...      ask a gateway to write an allow-listed value (request), the actions' audit trail (list)
  demo [DIR]       run the whole pipeline on this machine (default configs/demo)
  discover URL     browse opc.tcp://HOST:PORT/PATH into a plant file, or probe modbus://HOST:PORT --unit N
                   into a register-map CSV skeleton
  check FILE...    validate config files without touching the network (exit 2 on errors; --kind KIND)
  score CSV        run the edge's detectors over a recorded CSV
  fit-machine CSV  fit a machine's multivariate baseline (PCA per mode) from its normal history
  rebaseline CONFIG SIGNAL...      a confirmed change: these signals' baselines learn afresh (edge stopped)
  rebaseline --state-dir DIR M...  a confirmed change: a running edge drops these machines' baselines and refits
  models ...       the model loop, cloud side: keygen, fit (from InfluxDB), bundle-rul, verify, publish, status
  kernels          compile the edge's kernels ahead of time (the edge daemon then runs without numba)
  retention ...    set up InfluxDB retention policies and rollups, or back-fill rollups (ensure|backfill|print)
  console passwd USER  print a console user line (name, role, scrypt hash) for the users secret
  install          install systemd units, the plantwire user and directories (--root DIR for an image)
  uninstall        stop and remove the units (--purge: also config, state and user)
"""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    cmd, rest = args[0], args[1:]
    if cmd == "sim":
        from simulators.app import main as sim_main

        return sim_main(rest)
    if cmd == "edge":
        import os

        # The daemon runs the ahead-of-time compiled kernels when a build matches (~145 MB less RSS).
        os.environ.setdefault("PLANTWIRE_KERNELS", "auto")
        from edge.app import main as edge_main

        return edge_main(rest)
    if cmd == "ingest":
        from cloud.app import main as ingest_main

        return ingest_main(rest)
    if cmd == "alarms":
        from cloud.alarms.cli import main as alarms_main

        return alarms_main(rest)
    if cmd == "actions":
        from cloud.actions_cli import main as actions_main

        return actions_main(rest)
    if cmd == "demo":
        from plantwire.demo import main as demo_main

        return demo_main(rest)
    if cmd == "discover":
        from edge.discovery.cli import main as discover_main

        return discover_main(rest)
    if cmd == "check":
        from plantwire.check import main as check_main
        from plantwire.configfile import ConfigKind

        parser = argparse.ArgumentParser(prog="plantwire check")
        parser.add_argument("files", type=Path, nargs="+")
        parser.add_argument(
            "--kind", type=ConfigKind, choices=list(ConfigKind),
            help="what the files are (default: their 'kind:' field, else their name, else every kind is tried)",
        )
        parsed = parser.parse_args(rest)
        return check_main(parsed.files, parsed.kind)
    if cmd == "score":
        import os

        os.environ.setdefault("PLANTWIRE_KERNELS", "auto")  # the AOT kernels when built: start-up without numba
        try:
            from edge.score import main as score_main
        except ImportError:
            print("plantwire score: not available in this build", file=sys.stderr)
            return 2
        return score_main(rest)
    if cmd == "fit-machine":
        from edge.models.fit_command import main as fit_machine_main

        return fit_machine_main(rest)
    if cmd == "rebaseline":
        from edge.rebaseline import main as rebaseline_main

        return rebaseline_main(rest)
    if cmd == "models":
        from cloud.models.cli import main as models_main

        return models_main(rest)
    if cmd == "kernels":
        from edge.kernelbuild import main as kernels_main

        return kernels_main(rest)
    if cmd == "retention":
        from cloud.retention import main as retention_main

        return retention_main(rest)
    if cmd == "console":
        if rest[:1] != ["passwd"]:
            print("usage: plantwire console passwd USER [--role operator|read_only] [--stdin]", file=sys.stderr)
            return 2
        from edge.console.passwd import main as passwd_main

        return passwd_main(rest[1:])
    if cmd in ("install", "uninstall"):
        from plantwire.install import main as install_main

        return install_main(rest, remove=cmd == "uninstall")
    print(f"plantwire: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
