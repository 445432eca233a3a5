"""nextflow_schema.json and assets/schema_input.json: valid draft 2020-12 schemas that agree
with nextflow.config, the pipeline's params and the samplesheet parser (tssc_py.samplesheet).
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, ValidationError, validators

import tssc_py.methods
from tests.nextflow.nextflow_files import NF_FILES, REPO, Expression, config_params
from tssc_py import __version__
from tssc_py.baselines import MODELS
from tssc_py.errors import TsscError
from tssc_py.methods import Method, get_method, method_names
from tssc_py.report import check_label
from tssc_py.runs import REFINED, REFINED_SUFFIX, REFINES, refined_name
from tssc_py.samplesheet import read_samplesheet
from tssc_py.schema import SCHEMA, stale
from tssc_py.schema import UTILS as UTILS_FILE
from tssc_py.stage1.train import KIND as STAGE1_KIND

PARAMS_SCHEMA = json.loads((REPO / "nextflow_schema.json").read_text())
INPUT_SCHEMA = json.loads((REPO / "assets/schema_input.json").read_text())
TEST_SHEET = REPO / "assets/samplesheet_test.csv"
UTILS = REPO / "subworkflows/local/utils_tssc_pipeline/main.nf"


def _properties(schema: dict) -> dict[str, dict]:
    return {k: v for group in schema["$defs"].values() for k, v in group["properties"].items()}


def _unique_entries(validator, columns, rows, schema):
    """nf-schema's ``uniqueEntries`` keyword: no two rows share these columns."""
    seen = set()
    for row in rows:
        key = tuple(row.get(c) for c in columns)
        if key in seen:
            yield ValidationError(f"duplicate {', '.join(columns)} {key}")
        seen.add(key)


NfSchemaValidator = validators.extend(Draft202012Validator, {"uniqueEntries": _unique_entries})


def sheet_rows(sheet: Path) -> list[dict[str, object]]:
    """Rows as nf-schema hands them to the schema: empty cells absent, integer cells cast."""
    rows = []
    with sheet.open(newline="") as handle:
        for row in csv.DictReader(handle):
            item: dict[str, object] = {}
            for key, value in row.items():
                if value is None or value.strip() == "":
                    continue
                item[key] = int(value) if re.fullmatch(r"-?\d+", value) else value
            rows.append(item)
    return rows


def test_schemas_are_valid_draft_2020_12() -> None:
    for schema in (PARAMS_SCHEMA, INPUT_SCHEMA):
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)


# The keywords subworkflows/local/utils_tssc_pipeline checks, and those that only describe.
CHECKED = {"type", "enum", "pattern", "minimum", "maximum", "multipleOf", "format", "exists"}
DESCRIBING = {"description", "default", "hidden", "errorMessage", "schema", "meta"}


def test_the_schemas_use_only_the_keywords_the_pipeline_checks() -> None:
    entries = [*_properties(PARAMS_SCHEMA).values(), *INPUT_SCHEMA["items"]["properties"].values()]
    used = {key for entry in entries for key in entry}
    assert used <= CHECKED | DESCRIBING, used - CHECKED - DESCRIBING
    formats = {entry["format"] for entry in entries if "format" in entry}
    assert formats <= {"file-path", "directory-path"}
    assert set(INPUT_SCHEMA) - {"$schema", "title", "description"} == {
        "type",
        "items",
        "minItems",
        "uniqueEntries",
    }
    assert set(INPUT_SCHEMA["items"]) == {"type", "properties", "required"}


def test_every_param_has_a_schema_entry_and_a_valid_default() -> None:
    defaults = config_params()
    properties = _properties(PARAMS_SCHEMA)
    assert set(defaults) == set(properties)
    assert all(p.get("description") for p in properties.values())
    assert PARAMS_SCHEMA["allOf"] == [{"$ref": f"#/$defs/{k}"} for k in PARAMS_SCHEMA["$defs"]]
    set_values = {k: v for k, v in defaults.items() if v is not None}
    Draft202012Validator(PARAMS_SCHEMA).validate({**set_values, "outdir": "results"})
    for name, value in set_values.items():
        # a default Nextflow computes (the reports' launch time) has none in the schema
        expected = None if isinstance(value, Expression) else value
        assert properties[name].get("default") == expected, name


def test_test_profile_params_are_valid() -> None:
    values = {**config_params(), **config_params(REPO / "conf/test.config")}
    values = {k: v for k, v in values.items() if v is not None}
    Draft202012Validator(PARAMS_SCHEMA).validate({**values, "outdir": "results"})


def test_bad_params_are_refused() -> None:
    validator = Draft202012Validator(PARAMS_SCHEMA)
    for bad in (
        {"mode": "fast"},
        {"methods": "linear; rm -rf /"},
        {"methods": "linear,cubic"},
        {"refine_method": "cubic"},
        {"size": 4},
        {"device": "tpu"},
        {},  # no outdir
    ):
        with pytest.raises(ValidationError):
            validator.validate({"outdir": "results", **bad} if bad else bad)


def test_every_param_the_pipeline_reads_is_declared() -> None:
    used = set()
    for path in [*NF_FILES, *REPO.glob("conf/*.config")]:
        used |= set(re.findall(r"params\.(\w+)", path.read_text()))
    assert used <= set(config_params())


def test_versions_and_stage_2_names_match_the_package() -> None:
    config = (REPO / "nextflow.config").read_text()
    assert f"version         = '{__version__}'" in config
    assert f"ARG TSSC_VERSION={__version__}" in (REPO / "containers/Dockerfile").read_text()
    assert f"TSSC_VERSION={__version__}" in (REPO / "containers/tssc.def").read_text()
    assert config_params()["refine_method"] == REFINES
    inference = (REPO / "workflows/inference.nf").read_text()
    assert "[method: refinedName(meta.method)]" in inference
    utils = UTILS.read_text()
    # refinedName is tssc_py.runs.refined_name
    assert f"method == '{REFINES}' ? '{REFINED}' : \"${{method}}{REFINED_SUFFIX}\"" in utils
    assert refined_name(REFINES) == REFINED and refined_name("demons") == "demons_sc"


def test_size_bounds_match_the_package() -> None:
    from tssc_py import prepare, synth
    from tssc_py.training import MAX_BATCH_SIZE

    properties = _properties(PARAMS_SCHEMA)
    expected = {
        "size": (8, prepare.MAX_SIZE),
        "depth": (1, prepare.MAX_DEPTH),
        "frames_between": (1, prepare.MAX_FRAMES_BETWEEN),
        **{f"synth_{name}": limits for name, limits in synth.LIMITS.items()},
        **{f"train_{s}_batch_size": (1, MAX_BATCH_SIZE) for s in ("stage1", "stage2", "baseline")},
    }
    got = {k: (properties[k]["minimum"], properties[k].get("maximum")) for k in expected}
    assert got == expected


def test_the_test_samplesheet_is_valid_for_both() -> None:
    NfSchemaValidator(INPUT_SCHEMA).validate(sheet_rows(TEST_SHEET))
    subjects = read_samplesheet(TEST_SHEET)
    assert any(" " in str(s.scan) for s in subjects), "the test sheet has a scan path with a space"
    assert any(s.start_frame is not None for s in subjects)


BAD_SHEETS = {
    "subject with a slash": "subject,scan\nsub/1,a.nii.gz\n",
    "subject with a space": "subject,scan\nsub 1,a.nii.gz\n",
    "subject with a quote": "subject,scan\nsub'1,a.nii.gz\n",
    "subject ..": "subject,scan\n..,a.nii.gz\n",
    "hidden subject": "subject,scan\n.s1,a.nii.gz\n",
    "subject like an option": "subject,scan\n-s1,a.nii.gz\n",
    "subject too long": f"subject,scan\n{'s' * 101},a.nii.gz\n",
    "empty subject": "subject,scan\n,a.nii.gz\n",
    "empty scan": "subject,scan\ns1,\n",
    "duplicate subject": "subject,scan\ns1,a.nii.gz\ns1,b.nii.gz\n",
    "frame not an integer": "subject,scan,start_frame\ns1,a.nii.gz,first\n",
    "no scan column": "subject,path\ns1,a.nii.gz\n",
    "no rows": "subject,scan\n",
}


@pytest.mark.parametrize("text", BAD_SHEETS.values(), ids=BAD_SHEETS.keys())
def test_bad_samplesheets_are_refused_by_both(tmp_path: Path, text: str) -> None:
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text(text)
    errors = list(NfSchemaValidator(INPUT_SCHEMA).iter_errors(sheet_rows(sheet)))
    assert errors, "the schema accepts it"
    with pytest.raises(TsscError):
        read_samplesheet(sheet)


def test_schema_error_for_a_bad_subject_explains_the_rule(tmp_path: Path) -> None:
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text("subject,scan\nsub/1,a.nii.gz\n")
    error = next(NfSchemaValidator(INPUT_SCHEMA).iter_errors(sheet_rows(sheet)))
    message = INPUT_SCHEMA["items"]["properties"][error.path[-1]]["errorMessage"]
    assert "letters, digits" in message


def test_negative_frames_are_refused_by_the_schema(tmp_path: Path) -> None:
    # tssc-run refuses them later (tssc-prepare --start-frame is >= 0); the pipeline at once.
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text("subject,scan,start_frame\ns1,a.nii.gz,-1\n")
    assert list(NfSchemaValidator(INPUT_SCHEMA).iter_errors(sheet_rows(sheet)))


def _refused(name: str, value: object) -> bool:
    errors = Draft202012Validator(PARAMS_SCHEMA).iter_errors({"outdir": "results", name: value})
    return any(True for _ in errors)


LABELS = ["cohort_A", "acdc-2017.v2", "x", ".", "..", "a b", "a/b", "a'b", "", "données", "a;b"]
LABELS += [".hidden", "-x", "_x", "x" * 100, "x" * 101]


@pytest.mark.parametrize("label", LABELS)
def test_dataset_param_accepts_exactly_the_labels_tssc_report_accepts(label: str) -> None:
    try:
        check_label(label)
        valid = True
    except TsscError:
        valid = False
    assert _refused("dataset", label) is not valid
    assert _refused("figure_subject", label) is not valid


def test_train_baselines_param_names_the_learned_baselines() -> None:
    for good in [",".join(MODELS), *MODELS, "uvinet,voxelmorph"]:
        assert not _refused("train_baselines", good), good
    for bad in ("linear", "diffusion", "voxelmorph,", "voxelmorph,,uvinet", "", "vxm; rm -rf /"):
        assert _refused("train_baselines", bad), bad


def test_checkpoint_param_is_a_comma_list_of_folders() -> None:
    for good in ("stage1/checkpoint", "a/checkpoint,b b/checkpoint", "/abs/path/checkpoint"):
        assert not _refused("checkpoint", good), good
    for bad in ("", "a,,b", ",a", "a,"):
        assert _refused("checkpoint", bad), bad


def _alternatives(pattern: str) -> list[list[str]]:
    """The names of each ``(a|b|c)`` group of a pattern."""
    return [group.split("|") for group in re.findall(r"\(([a-z0-9_|]+)\)", pattern)]


def test_the_pipeline_copies_the_library_s_lists(tmp_path: Path) -> None:
    """Method names, model kinds, presets and the other lists reach the pipeline from the
    library (python -m tssc_py.schema), so a new method cannot be forgotten there."""
    assert stale() == []
    proc = subprocess.run(
        [sys.executable, "-m", "tssc_py.schema", "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout
    # A copy that drifted (a method gone from the schema, a kind from the Groovy) is found.
    for name in (SCHEMA, UTILS_FILE):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((REPO / name).read_text())
    schema = tmp_path / SCHEMA
    schema.write_text(schema.read_text().replace("|uvinet|voxelmorph)", "|uvinet)", 1))
    utils = tmp_path / UTILS_FILE
    utils.write_text(utils.read_text().replace(", 'voxelmorph']", "]", 1))
    assert stale(tmp_path) == [SCHEMA, UTILS_FILE]


def test_method_params_accept_exactly_the_library_methods() -> None:
    """--methods, --cpu_methods and --refine_method list tssc_py.methods' names, so a wrong
    name stops the run at validation instead of in an INTERPOLATE task after training."""
    names = method_names()
    alternation = "|".join(names)
    properties = _properties(PARAMS_SCHEMA)
    assert properties["methods"]["pattern"] == f"^({alternation})(,({alternation}))*$"
    assert properties["cpu_methods"]["pattern"] == f"^(({alternation})(,({alternation}))*)?$"
    assert properties["refine_method"]["enum"] == names
    for name in ("methods", "cpu_methods"):
        assert _alternatives(properties[name]["pattern"]) == [names, names]
        assert not _refused(name, ",".join(names))
        for bad in ("cubic", "linear,cubic", "linear,", ",linear", "linear nearest", "Linear"):
            assert _refused(name, bad), (name, bad)
    assert not _refused("cpu_methods", "")
    assert _refused("methods", "")


def _checkpoint_kinds() -> dict[str, str | None]:
    """Each registered method's checkpoint kind (None: it runs no trained model)."""
    classes = [
        cls
        for cls in vars(tssc_py.methods).values()
        if isinstance(cls, type) and issubclass(cls, Method) and cls is not Method
    ]
    kinds = {cls.name: cls.checkpoint_kind for cls in classes if getattr(cls, "name", None)}
    assert sorted(kinds) == method_names()
    return kinds


def test_the_pipeline_knows_each_method_s_checkpoint_kind() -> None:
    """The pipeline refuses a learned method without a model before anything runs, by its kind."""
    text = UTILS.read_text()
    listed = re.search(r"^\s*return \[(diffusion: .*)\]\[method\]$", text, re.M)
    assert listed is not None
    table = dict(re.findall(r"(\w+): '(\w+)'", listed.group(1)))
    learned = {name: kind for name, kind in _checkpoint_kinds().items() if kind is not None}
    assert table == learned


def test_method_params_name_registered_methods() -> None:
    registered = set(method_names())
    cpu = config_params()["cpu_methods"].split(",")
    assert set(cpu) <= registered
    # a method that runs a trained model (has a checkpoint kind) would want its GPU
    assert all(get_method(name).checkpoint_kind is None for name in cpu)
    test_profile = config_params(REPO / "conf/test.config")
    assert set(test_profile["methods"].split(",")) <= registered
    assert set(test_profile["train_baselines"].split(",")) <= set(MODELS)


def test_the_pipeline_knows_the_stage_1_checkpoint_kind() -> None:
    assert f"['{STAGE1_KIND}'] + baselines" in UTILS.read_text()


def test_checkpoint_kinds_match_the_package() -> None:
    listed = re.search(r"^\s*def kinds = \[(.*)\]$", UTILS.read_text(), re.M)
    assert listed is not None
    assert sorted(re.findall(r"'(\w+)'", listed.group(1))) == sorted([STAGE1_KIND, *MODELS])
