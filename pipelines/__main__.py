"""``python -m pipelines``: compile, check, upload, run on a cluster, or run locally (see ``pipelines``).

    python -m pipelines compile [--out FILE] [--image-registry REG | --cpu-image REF --gpu-image REF]
    python -m pipelines compile --kubernetes-manifests [--namespace NS] [--sha SHA]   # GitOps objects
    python -m pipelines check [FILE]
    python -m pipelines stale [--committed FILE] [--root URI]
    python -m pipelines upload --host http://localhost:8080 [--package FILE] [--sha SHA] [--token T]
    python -m pipelines upload --host http://localhost:8080 --from twt-distillation@stable [--root URI]
    python -m pipelines publish [--root URI] [--package FILE] [--tag latest ...] [--kfp-registry-host URL]
    python -m pipelines run --host http://localhost:8080 --config C.yaml [--set gpu_cpu=16 ...]
        [--pipeline-version 0.1.0-<sha> | --package FILE] [--token-file F | --cookies C]
    python -m pipelines local --config configs/demo.yaml [--root runs/kfp-local] [--registry DIR]
    python -m pipelines local --config configs/smoke.yaml --runner docker --image localhost/twt-cpu:0.1.0

A bad input ends in one line on stderr and exit status 2 (``TWT_DEBUG=1`` shows the traceback).
"""

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path


def _overrides(pairs: list[str]) -> dict:
    from pipelines.release import ReleaseError, parse_value

    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ReleaseError(f"--set wants NAME=VALUE, got {pair!r}")
        out[name] = parse_value(value)
    return out


def _client(args: argparse.Namespace):
    from pipelines.kfp_server import connect, read_token

    token = read_token(args.token, args.token_file)
    return connect(args.host, args.namespace, token=token, cookies=args.cookies)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that end in one line: bad input (ReleaseError, ConfigError), files, an unreachable or
    refusing KFP API."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from twt.core.store import StoreError

    return (ValueError, OSError, ApiException, HTTPError, StoreError)


def _kfp_prints_to_stderr() -> contextlib.AbstractContextManager:
    """kfp's client prints "Pipeline details: <link>" and the like on stdout; this command's stdout is
    its own result (JSON), so those lines go to stderr."""
    return contextlib.redirect_stdout(sys.stderr)


def _one_line(err: BaseException) -> str:
    """The error in one line; kfp_server_api's ``ApiException`` prints status, headers and body on many."""
    from kfp_server_api.exceptions import ApiException

    if isinstance(err, ApiException):
        body = " ".join(str(err.body or "").split())[:200]
        return f"the KFP API answered {err.status} {err.reason}" + (f": {body}" if body else "")
    return " ".join(str(err).split("\n"))


def build_parser() -> argparse.ArgumentParser:
    from pipelines import kfp_server, release

    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    compile_ = commands.add_parser("compile", help="write dist/twt-distillation-<version>.yaml (checked)")
    compile_.add_argument("--out", help="output file (default dist/twt-distillation-<version>.yaml)")
    compile_.add_argument(
        "--image-registry",
        default=os.environ.get("TWT_IMAGE_REGISTRY"),
        help="run REG/twt-{cpu,gpu}:<version> (default: $TWT_IMAGE_REGISTRY, else ghcr.io/twt-project)",
    )
    compile_.add_argument(
        "--cpu-image", help="the CPU steps' image, a full reference (wins over the registry)"
    )
    compile_.add_argument(
        "--gpu-image", help="the GPU steps' image, a full reference (wins over the registry)"
    )
    compile_.add_argument(
        "--kubernetes-manifests",
        action="store_true",
        help="write the Pipeline and PipelineVersion objects instead (a KFP with the Kubernetes pipeline "
        "store; GitOps), version <version>-<git sha>",
    )
    compile_.add_argument("--sha", help="--kubernetes-manifests: the commit (default: git rev-parse HEAD)")
    compile_.add_argument("--namespace", help="--kubernetes-manifests: the objects' namespace")

    stale = commands.add_parser(
        "stale", help="fail when a committed or published spec differs from this tree"
    )
    stale.add_argument(
        "--image-registry", default=os.environ.get("TWT_IMAGE_REGISTRY"), help="as for compile"
    )
    stale.add_argument("--committed", help="a committed spec file to compare")
    stale.add_argument("--root", default=os.environ.get("TWT_PIPELINE_REGISTRY"), help="pipeline registry")

    check = commands.add_parser("check", help="fail unless the spec's image tags equal the package version")
    check.add_argument("package", nargs="?", help="compiled spec (default: this version's file in dist/)")

    def cluster(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
        sub.add_argument(
            "--namespace",
            default=release.NAMESPACE,
            help=f"namespace of the runs (default {release.NAMESPACE}, as manifests/; multi-user: a profile)",
        )
        sub.add_argument(
            "--token",
            default=os.environ.get(kfp_server.ENV_TOKEN),
            help=f"bearer token for a multi-user API server (default ${kfp_server.ENV_TOKEN}; prefer the "
            "variable or --token-file: arguments show in ps)",
        )
        sub.add_argument(
            "--token-file",
            default=os.environ.get(kfp_server.ENV_TOKEN_FILE),
            help=f"file holding the token, e.g. a service account's (default ${kfp_server.ENV_TOKEN_FILE})",
        )
        sub.add_argument(
            "--cookies",
            default=os.environ.get(kfp_server.ENV_COOKIES),
            help=f"the dashboard's session cookie(s) 'name=value; ...' (default ${kfp_server.ENV_COOKIES})",
        )
        sub.add_argument(
            "--skip-backend-check",
            action="store_true",
            help=f"do not ask the API server's version (needed: {kfp_server.MIN_VERSION}+)",
        )

    upload = commands.add_parser("upload", help="create the pipeline or add version <version>-<git sha>")
    cluster(upload)
    upload.add_argument("--package", help="compiled spec (default: this version's file in dist/)")
    upload.add_argument("--sha", help="commit to name the version by (default: git rev-parse HEAD)")
    upload.add_argument(
        "--from",
        dest="from_ref",
        metavar="NAME@VERSION|TAG",
        help="upload a published template (verified; named by the git sha it was compiled from)",
    )
    upload.add_argument("--root", default=os.environ.get("TWT_PIPELINE_REGISTRY"), help="registry of --from")

    publish = commands.add_parser("publish", help="push the template to the registry (immutable, tagged)")
    publish.add_argument(
        "--root",
        default=os.environ.get("TWT_PIPELINE_REGISTRY"),
        help="registry root: s3://bucket/prefix or a directory (default: $TWT_PIPELINE_REGISTRY)",
    )
    publish.add_argument("--package", help="compiled spec (default: compile to dist/ first)")
    publish.add_argument(
        "--tag", action="append", help="tag to move to this version (repeat; default: $TWT_PIPELINE_TAGS)"
    )
    publish.add_argument("--sha", help="commit to record (default: git rev-parse HEAD)")
    publish.add_argument("--allow-dirty", action="store_true", help="publish from uncommitted changes")
    publish.add_argument(
        "--kfp-registry-host",
        default=os.environ.get("TWT_KFP_REGISTRY_HOST"),
        help="also upload to this KFP template registry (token: $TWT_KFP_REGISTRY_TOKEN)",
    )

    run = commands.add_parser("run", help="run an uploaded version with parameters from a twt configuration")
    cluster(run)
    run.add_argument(
        "--pipeline-version",
        help="the uploaded version to run (default: <version>-<git sha>, as upload names this tree)",
    )
    run.add_argument("--package", help="submit this compiled spec as a one-off run instead of a version")
    run.add_argument("--config", required=True, help="twt run configuration (YAML)")
    run.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="other parameters")
    run.add_argument("--run-name", help="default: <config name>-<version>")
    run.add_argument("--experiment", help="default: the configuration's name")
    run.add_argument("--service-account", default="twt-pipeline-runner")

    local = commands.add_parser("local", help="run the same DAG on this machine (kfp.local)")
    local.add_argument("--config", required=True, help="twt run configuration (YAML)")
    local.add_argument(
        "--root", default="runs/kfp-local", help="local pipeline root (default runs/kfp-local)"
    )
    local.add_argument("--registry", help="registry URI (default: the config's, else <root>/registry)")
    local.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="other parameters")
    local.add_argument(
        "--runner",
        choices=("subprocess", "docker"),
        default="subprocess",
        help="subprocess: steps in this Python; docker: each step in its image (DOCKER_HOST: Docker, podman)",
    )
    local.add_argument("--image", help="--runner docker: the image every step runs (default: the CPU image)")
    return parser


def _local_secrets() -> dict[str, dict[str, str]]:
    """The cluster's Secrets, from this environment: what --runner docker passes to the containers."""
    from pipelines.distillation import TEACHER_KEY_ENVS

    env = os.environ
    secrets: dict[str, dict[str, str]] = {"minio": {}, "hf_token": {}, "teacher_keys": {}}
    for key, name in (("accesskey", "TWT_S3_ACCESS_KEY"), ("secretkey", "TWT_S3_SECRET_KEY")):
        if name in env:
            secrets["minio"][key] = env[name]
    if "HF_TOKEN" in env:
        secrets["hf_token"]["token"] = env["HF_TOKEN"]
    secrets["teacher_keys"] = {name: env[name] for name in TEACHER_KEY_ENVS if name in env}
    return secrets


def main(argv: list[str] | None = None) -> int:
    from pipelines import release

    args = build_parser().parse_args(argv)
    try:
        if args.command == "compile":
            from pipelines.images import choose_images

            images = choose_images(args.image_registry, args.cpu_image, args.gpu_image)
            if args.kubernetes_manifests:
                out = args.out or release.package_path().with_suffix(".k8s.yaml")
                print(
                    release.kubernetes_manifests(out, sha=args.sha, namespace=args.namespace, images=images)
                )
            else:
                print(release.compile_pipeline(args.out, images=images))
        elif args.command == "stale":
            from pipelines.images import choose_images
            from pipelines.stale import check_stale

            print(check_stale(choose_images(args.image_registry), args.committed, args.root))
        elif args.command == "check":
            images = release.check_images(args.package or release.package_path())
            print(f"ok: {len(images)} executors on {sorted(set(images.values()))}")
        elif args.command == "upload" and args.from_ref:
            from pipelines.publish import upload_published

            if args.package:
                raise release.ReleaseError("--from and --package exclude each other")
            with _kfp_prints_to_stderr():
                result = upload_published(
                    lambda: _client(args),
                    args.from_ref,
                    args.root,
                    sha=args.sha,
                    check_backend=not args.skip_backend_check,
                )
            print(json.dumps(result, indent=2))
        elif args.command == "upload":
            release.check_images(args.package or release.package_path())  # before connecting
            with _kfp_prints_to_stderr():
                result = release.upload(
                    _client(args), args.package, sha=args.sha, check_backend=not args.skip_backend_check
                )
            print(json.dumps(result, indent=2))
        elif args.command == "publish":
            from pipelines.publish import env_tags, publish_release

            result = publish_release(
                args.root,
                args.package,
                tags=args.tag if args.tag is not None else env_tags(),
                sha=args.sha,
                allow_dirty=args.allow_dirty,
                kfp_registry_host=args.kfp_registry_host,
                kfp_registry_token=os.environ.get("TWT_KFP_REGISTRY_TOKEN"),
            )
            print(json.dumps(result, indent=2))
        elif args.command == "run":
            if args.package and args.pipeline_version:
                raise release.ReleaseError("--package and --pipeline-version exclude each other")
            if args.package:
                release.check_images(args.package)  # before connecting
            release.run_arguments(args.config, overrides=_overrides(args.set))
            with _kfp_prints_to_stderr():
                result = release.submit_run(
                    _client(args),
                    args.config,
                    pipeline_version=args.pipeline_version,
                    package=args.package,
                    check_backend=not args.skip_backend_check,
                    overrides=_overrides(args.set),
                    run_name=args.run_name,
                    experiment=args.experiment,
                    service_account=args.service_account,
                )
            print(f"run {getattr(result, 'run_id', result)}")
        elif args.runner == "docker":
            from components.images import CPU_IMAGE
            from pipelines.containers import ContainerRunError, run_in_containers

            try:
                result = run_in_containers(
                    args.config,
                    args.root,
                    args.image or CPU_IMAGE,
                    args.registry or str(Path(args.root).resolve() / "registry"),
                    secrets=_local_secrets(),
                    overrides=_overrides(args.set),
                )
            except ContainerRunError as err:
                raise release.ReleaseError(str(err)) from None
            print(json.dumps(result, indent=2))
        else:
            from pipelines.local import run_local

            log = Path(args.root) / "tasks.log"  # kfp's own lines; the console gets one line per task
            result = run_local(
                args.config, args.root, args.registry, _overrides(args.set), log_file=log, progress=True
            )
            print(json.dumps(result, indent=2))
    except _user_errors() as err:
        if os.environ.get("TWT_DEBUG"):
            raise
        print(f"pipelines: error: {_one_line(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
