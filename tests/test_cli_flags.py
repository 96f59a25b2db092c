"""The CLI's setting flags derive from the schema (twt.app.flags): help, types and choices from the fields,
values through the schema's validation, errors naming the flag."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

import pytest
import yaml

from twt.app.cli import build_parser, main
from twt.app.flags import NULL, SETTING_FLAGS, add_setting_flags, apply_setting_flags, section_model
from twt.core.load import default_config_path, load_config
from twt.core.schema import RunConfig

# Hand-written options whose name is also a field of a schema section, and why they are not that setting.
NOT_SETTINGS = {
    ("demo", "--eval-questions"): "caps the held-out questions the demo scores (run_demo's argument)",
    ("task build", "--device"): "the torch device this process trains the tiny models on",
    ("sample", "--questions"): "an input file",
    ("sample", "--teacher"): "which teachers to sample (names), not compression.teacher",
    ("dcrs", "--questions"): "an input file",
    ("dcrs", "--candidates"): "input files",
    ("distill", "--device"): "the torch device of this process, not training.device",
    ("registry publish", "--version"): "the version to publish now, not the run's registry.version",
}


def commands(parser: argparse.ArgumentParser, name: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its name ("dcrs", "task questions", ...), subcommands included."""
    found = {name: parser} if name else {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                found |= commands(subparser, f"{name} {sub}".strip())
    return found


def setting_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    flags = parser.get_default(SETTING_FLAGS) or {}
    return [action for action in parser._actions if action.dest in flags]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    return code, capsys.readouterr().err


def test_every_setting_flag_is_a_real_field_of_the_kind_the_schema_says() -> None:
    seen = 0
    for name, parser in commands(build_parser()).items():
        flags = parser.get_default(SETTING_FLAGS) or {}
        for action in setting_actions(parser):
            key, field = action.dest.split(".")
            assert key in RunConfig.model_fields, (name, action.dest)
            info = section_model(key).model_fields[field]  # KeyError: a flag for no field
            assert action.option_strings[0] == flags[action.dest] and action.default is None
            annotation = info.annotation
            if typing.get_origin(annotation) is typing.Literal:
                assert tuple(action.choices) == typing.get_args(annotation), (name, action.dest)
            elif annotation is bool:
                assert isinstance(action, argparse.BooleanOptionalAction)
            else:  # the default, written on the command line, gives the default back
                value = action.type("null" if info.default is None else str(info.default))
                assert (None if value is NULL else value) == info.default, (name, action.dest)
            seen += 1
    assert seen >= 15


def test_setting_flags_take_their_help_from_the_schema() -> None:
    for name, parser in commands(build_parser()).items():
        text = " ".join(parser.format_help().split())  # every command's help renders
        for action in setting_actions(parser):
            key, field = action.dest.split(".")
            description = section_model(key).model_fields[field].description
            assert description in action.help, (name, action.dest)
            assert " ".join(description.split()) in text, (name, action.dest)
    dcrs = commands(build_parser())["dcrs"]
    assert "(default 0.5)" in next(a.help for a in dcrs._actions if a.dest == "dcrs.quality_threshold")


def test_no_hand_written_flag_spells_a_setting() -> None:
    fields = {f for key in RunConfig.model_fields for f in getattr(section_model(key), "model_fields", {})}
    found = set()
    for name, parser in commands(build_parser()).items():
        settings = {action.dest for action in setting_actions(parser)}
        for action in parser._actions:
            if action.option_strings and action.dest not in settings and action.dest in fields:
                found.add((name, action.option_strings[-1]))
    assert found == set(NOT_SETTINGS)


def test_the_flag_spellings_stay() -> None:
    parsers = commands(build_parser())
    spelled = {name: {s for a in setting_actions(p) for s in a.option_strings} for name, p in parsers.items()}
    assert {"--quality-threshold", "--similarity-threshold", "--max-per-question"} <= spelled["dcrs"]
    assert {"--method", "--teacher", "--ratio", "--reference"} <= spelled["compress"]
    assert {"--processes", "--parallel"} <= spelled["distill"]
    assert {"--train", "--eval", "--seed"} <= spelled["task questions"]


def test_a_bad_value_names_the_flag(capsys) -> None:
    dcrs = ["dcrs", "--questions", "q.jsonl", "--candidates", "c.jsonl", "--out", "o", "--report", "r"]
    code, err = run([*dcrs, "--quality-threshold", "2"], capsys)
    assert (
        code == 2 and err.startswith("twt: error: --quality-threshold 2.0: ") and "less than or equal" in err
    )
    code, err = run([*dcrs, "--max-per-question", "many"], capsys)  # argparse's own check
    assert code == 2 and "--max-per-question: invalid int value: 'many'" in err
    distill = ["distill", "--stage", "1", "--data", "d", "--base", "b", "--out", "o"]
    code, err = run([*distill, "--processes", "0"], capsys)
    assert code == 2 and "--processes 0: Input should be greater than or equal to 1" in err
    code, err = run(["compress", "--data", "d", "--out", "o", "--report", "r", "--teacher", "nobody"], capsys)
    assert code == 2 and "--teacher nobody: no teacher 'nobody'" in err  # a check across sections


def test_a_flag_of_a_setting_without_effect_is_refused(capsys) -> None:
    compress = ["compress", "--data", "d", "--out", "o", "--report", "r"]
    code, err = run([*compress, "--method", "teacher", "--ratio", "0.3"], capsys)
    assert code == 2 and "--ratio 0.3: has no effect: only used when method is 'cts'" in err
    code, err = run([*compress, "--method", "cts", "--no-attempt-verdict"], capsys)
    assert code == 2 and "--no-attempt-verdict: has no effect" in err


def test_flags_replace_the_configurations_values_and_keep_the_rest(tmp_path: Path) -> None:
    data = yaml.safe_load(default_config_path().read_text())
    data["compression"] = {"method": "teacher", "attempt_verdict": True}
    data["dcrs"] = {"max_per_question": 2, "similarity_threshold": 0.8}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    parsers = commands(build_parser())

    dcrs = ["--questions", "q", "--candidates", "c", "--out", "o", "--report", "r"]
    args = parsers["dcrs"].parse_args([*dcrs, "--max-per-question", "null", "--use-gold"])
    config = apply_setting_flags(load_config(path), args)
    assert config.dcrs.max_per_question is None and config.dcrs.use_gold
    assert config.dcrs.similarity_threshold == 0.8 and config.dcrs.quality_threshold == 0.5

    # --method cts drops the configuration's teacher-only setting instead of refusing it
    args = parsers["compress"].parse_args(["--data", "d", "--out", "o", "--report", "r", "--method", "cts"])
    config = apply_setting_flags(load_config(path), args)
    assert config.compression.method == "cts" and "attempt_verdict" not in config.compression.model_dump()

    unchanged = load_config(path)
    args = parsers["compress"].parse_args(["--data", "d", "--out", "o", "--report", "r"])
    assert apply_setting_flags(load_config(path), args) == unchanged


def test_twt_task_questions_takes_the_task_settings(tmp_path: Path) -> None:
    out = tmp_path / "q"
    assert main(["task", "questions", "--out", str(out), "--train", "6", "--eval", "4", "--seed", "2"]) == 0
    assert len((out / "train.jsonl").read_text().splitlines()) == 6
    assert len((out / "eval.jsonl").read_text().splitlines()) == 4


def test_flag_kinds_follow_the_annotation() -> None:
    parser = argparse.ArgumentParser()
    add_setting_flags(parser, "evaluation", ["baselines"])
    assert parser.parse_args(["--baselines", "stage1", "stage2"]).__dict__["evaluation.baselines"] == [
        "stage1",
        "stage2",
    ]
    with pytest.raises(TypeError, match="node_selector"):
        add_setting_flags(argparse.ArgumentParser(), "training", ["node_selector"])
