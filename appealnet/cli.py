"""Command line: ``appealnet run`` (the main job), ``appealnet models``,
``appealnet profile``.  Also ``python -m appealnet ...``."""
import argparse
import sys


def _budget_args(parser):
    group = parser.add_argument_group("cost (Eq. 6): give --beta, or --budget with --c0 and --c1")
    group.add_argument("--beta", type=float, help="weight of -log q in the loss (default 1.0)")
    group.add_argument("--budget", type=float, help="average cost budget b, between c1 and c0")
    group.add_argument("--c0", type=float, help="cost of an appealed input (M MACs)")
    group.add_argument("--c1", type=float, help="cost of an input kept at the edge (M MACs)")
    group.add_argument("--adapt-beta", action="store_true",
                       help="adapt beta by dual ascent so the skipping rate meets the budget")


def build_parser():
    from .experiment import PREDICTORS, RECIPES, SETTING_CHOICES

    parser = argparse.ArgumentParser(prog="appealnet", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train big, small and AppealNet models; evaluate; write tables",
                         description="Runs the whole AppealNet experiment. With no arguments: the "
                                     "bundled digits data, in about two minutes on 2 cores.")
    run.add_argument("--dataset", default="digits", choices=sorted(RECIPES))
    run.add_argument("--data-dir", help="folder holding (or receiving, with --download) the dataset")
    run.add_argument("--download", action="store_true", help="download the dataset if missing")
    run.add_argument("--big", help="cloud model, e.g. resnet56 (see `appealnet models`)")
    run.add_argument("--small", help="edge model, with options: e.g. mobilenet_v1:width_mult=0.25")
    run.add_argument("--setting", default="white-box", choices=SETTING_CHOICES,
                     help="white-box (Table I), black-box (Table II), or both into out/<setting>")
    _budget_args(run)
    run.add_argument("--epochs", type=int, nargs="+",
                     help="epochs: one number, or three (big small joint)")
    run.add_argument("--batch-size", type=int)
    run.add_argument("--lr", type=float)
    run.add_argument("--predictors", nargs="+", default=["linear"], choices=sorted(PREDICTORS),
                     help="predictor-head variants to train (the paper's linear head always is)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--threads", type=int, help="OpenMP threads (default: all cores)")
    run.add_argument("--out", help="output folder (default appealnet-results/<dataset>/<setting>)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run")
    run.add_argument("--force", action="store_true",
                     help="overwrite an --out that holds results of another configuration")
    run.add_argument("--limit", type=int, help="use only the first N training images (quick tries)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")

    sub.add_parser("models", help="list the model zoo with parameters and MACs at 32x32")
    prof = sub.add_parser("profile", help="per-layer MACs, parameters and memory of a model")
    prof.add_argument("model")
    prof.add_argument("--input", type=int, nargs=3, default=[3, 32, 32], metavar=("C", "H", "W"))
    prof.add_argument("--num-classes", type=int, default=10)
    prof.add_argument("--convention", default="macs", choices=["macs", "paper"])
    prof.add_argument("--latency", action="store_true", help="also time the forward pass")
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            from .experiment import make_config, run
            epochs = None
            if args.epochs:
                if len(args.epochs) not in (1, 3):
                    raise ValueError("--epochs takes one number or three (big small joint)")
                epochs = args.epochs[0] if len(args.epochs) == 1 else tuple(args.epochs)
            cfg = make_config(
                dataset=args.dataset, data_dir=args.data_dir, download=args.download, big=args.big,
                small=args.small, setting=args.setting, beta=args.beta, budget=args.budget,
                c0=args.c0, c1=args.c1, epochs=epochs, seed=args.seed, threads=args.threads,
                out=args.out, resume=args.resume, force=args.force, batch_size=args.batch_size,
                lr=args.lr, predictors=tuple(args.predictors), adapt_beta=args.adapt_beta,
                limit=args.limit, progress=not args.quiet)
            run(cfg, argv=["appealnet"] + argv)
        elif args.command == "models":
            from . import models
            from .profiler import profile
            print("| model | params (M) | MACs (M) at 3x32x32 |")
            print("|---|---|---|")
            for name in models.list_models():
                p = profile(models.create(name), (3, 32, 32))
                print(f"| {name} | {p.params / 1e6:.3f} | {p.macs / 1e6:.2f} |")
        elif args.command == "profile":
            from . import models
            from .profiler import profile
            model = models.create(args.model, num_classes=args.num_classes)
            print(profile(model, tuple(args.input), convention=args.convention,
                          measure_latency=args.latency).table())
    except BrokenPipeError:
        # output piped into `head` and closed early: not an error
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        print(f"\ninterrupted: {exc}" if str(exc) else "\ninterrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        print(f"appealnet: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
