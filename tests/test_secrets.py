"""Passwords in the URLs a user gives (Optuna storage, MLflow tracking URI): shown as ``***``.

The parse is checked against the driver's own: SQLAlchemy's ``make_url`` for RDB URLs.
"""

from __future__ import annotations

from urllib.parse import quote, quote_plus, unquote

import pytest
from sqlalchemy.engine import make_url

from ablate.secrets import password, redact, redact_text

# each character that urllib's urlsplit and SQLAlchemy disagree on, or that must be percent-encoded
HARD = ["s3cr#et", "s3cr?et", "s3cr/et", "s3cr@et", "s3cr[et", "s3cr]et", "s3cr%et", "s3cr:et", "s3cr et",
        "s3#?/ @[]%:k"]
TEMPLATES = ["postgresql://ablate:{}@db.example.org:5432/ablate_test",
             "postgresql+psycopg2://ablate:{}@10.0.0.7/optuna?sslmode=require",
             "mysql+pymysql://ablate:{}@[::1]:3306/optuna",
             "https://ablate:{}@mlflow.example.org:5000",
             "http://ablate:{}@127.0.0.1:5000/mlflow"]


def _forms(password: str) -> list[tuple[str, str]]:
    """``(how it is written in the URL, the password the driver sends)``: percent-encoded, and raw."""
    return [(quote(password, safe=""), password), (password, unquote(password))]


CASES = [(t, written, sent) for t in TEMPLATES for pw in HARD for written, sent in _forms(pw)]


@pytest.mark.parametrize(("template", "written", "sent"), CASES)
def test_redact_hides_the_password_wherever_it_is_written(template, written, sent):
    url = template.format(written)
    shown = redact(url)
    assert shown == template.format("***")
    assert password(url) == sent
    for form in {written, sent, quote(sent, safe=""), quote_plus(sent)}:
        assert form not in shown


@pytest.mark.parametrize(("template", "written", "sent"),
                         [c for c in CASES if c[0].startswith(("postgresql", "mysql"))])
def test_redact_agrees_with_sqlalchemy(template, written, sent):
    """What SQLAlchemy connects with is hidden; its host, port, database and query are kept."""
    url = template.format(written)
    shown = redact(url)
    if "@" not in written:  # a raw "@" in a password is not one SQLAlchemy can read (see the next test)
        assert make_url(url).password == sent
        assert make_url(url).password not in shown
    theirs, ours = make_url(template.format(quote(sent, safe=""))), make_url(shown)
    assert (ours.host, ours.port, ours.database, dict(ours.query)) == \
        (theirs.host, theirs.port, theirs.database, dict(theirs.query))
    assert ours.password == "***"


def test_a_raw_at_sign_is_hidden_up_to_the_last_at():
    """SQLAlchemy takes ``s3cr`` as the password and ``et@host`` as the host: neither part is shown."""
    url = "postgresql://ablate:s3cr@et@db.example.org/optuna"
    assert make_url(url).password == "s3cr"
    assert redact(url) == "postgresql://ablate:***@db.example.org/optuna"


@pytest.mark.parametrize("url", [
    "", "runs/study/journal.log", "/abs/runs/journal.log", "sqlite:///mlflow.db", "sqlite:////tmp/o.db",
    "postgresql://ablate@db/optuna", "postgresql://db:5432/optuna", "http://127.0.0.1:5000",
    "https://mlflow.example.org/path", "postgresql://ablate:@db/optuna", "databricks", "file:///tmp/mlruns",
])
def test_urls_without_a_password_are_unchanged(url):
    assert redact(url) == url
    assert redact_text(f"error at {url}: no", url) == f"error at {url}: no"


@pytest.mark.parametrize("url", [
    "http://[", "http://]", "postgresql://u:p@[::1", "postgresql://u:[p]@h]/d", "://:@", "a://b:c@",
    "http://u:p@h:notaport/x", "postgresql://u:p@h/d?x=%zz", "\x00://\x00:\x00@\x00", ":" * 50, "@" * 50,
])
def test_redact_never_raises(url):
    password(url)
    shown = redact(url)
    assert isinstance(shown, str)
    assert isinstance(redact_text(f"failed: {url} {unquote(url)}", url), str)


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("password", HARD)
def test_redact_text_scrubs_every_form_of_the_password(template, password):
    for written, sent in _forms(password):
        url = template.format(written)
        text = (f"could not connect to {url}: auth failed for {sent!s} "
                f"(dsn password={quote(sent, safe='')}, form {quote_plus(sent)}, as given {written})")
        scrubbed = redact_text(text, url)
        for form in {written, sent, quote(sent, safe=""), quote_plus(sent)}:
            assert form not in scrubbed, (form, scrubbed)
        assert "could not connect to" in scrubbed and "auth failed for ***" in scrubbed


def test_redact_text_keeps_text_without_the_password():
    url = "postgresql://ablate:hunter22@db/optuna"
    message = "relation optuna.trials does not exist"
    assert redact_text(message, url) == message
    assert redact_text("", url) == ""


def test_the_module_needs_neither_torch_nor_optuna():
    import subprocess
    import sys

    code = "import sys, ablate.secrets; print(sorted({'torch', 'optuna', 'mlflow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- what ablate writes and prints, with password-bearing URLs ---------------------------------------

PW = "s3#?/ @[]%:k"
STORAGE = f"postgresql://ablate:{quote(PW, safe='')}@db.example.org:5432/optuna"
TRACKING = f"postgresql://ablate:{PW}@mlflow.example.org/mlflow"  # raw: every hard character as typed


def _leaks(text: str) -> list[str]:
    return [f for f in {PW, quote(PW, safe=""), quote_plus(PW), *PW.split("@")} if len(f) > 3 and f in text]


@pytest.fixture
def spec(tmp_path):
    """A composed search study whose storage and MLflow store (a fixed override, as given on the
    command line: ``tracking.uri=...``) have passwords."""
    import dataclasses

    from ablate.sweep import compose_study

    composed = compose_study("tricks_digits", ["n_trials=3"], cwd=tmp_path)
    return dataclasses.replace(composed, storage=STORAGE, tracking_uri=TRACKING,
                               fixed={**composed.fixed, "tracking.uri": TRACKING})


def test_study_json_has_no_password_and_reads_back_as_the_same_recipe(spec):
    from ablate.sweep import StudySpec

    document = spec.to_json()
    assert not _leaks(document)
    stored = StudySpec.from_json(document)
    assert stored.storage == redact(STORAGE) and stored.tracking_uri == redact(TRACKING)
    assert stored.recipe == spec.recipe  # a resume with the same command is the same study
    assert stored.with_secrets(STORAGE, TRACKING).tracking_uri == TRACKING  # what a worker is told


def test_sweep_summary_shows_no_password(spec):
    import optuna

    from ablate.sweep.progress import summary

    study = optuna.create_study(direction="maximize")
    trial = optuna.trial.create_trial(params=spec.space.representative(),
                                      distributions=spec.space.distributions, value=0.9)
    study.add_trial(trial)
    text = summary(study, spec, "0123abcd", 12.0, 2)
    assert "ablate train" in text and "tracking.uri=" in text
    assert not _leaks(text), text


def test_child_run_params_and_config_hide_the_tracking_password():
    from omegaconf import OmegaConf

    from ablate.config import compose
    from ablate.tracking.runs import config_record

    cfg = compose(["tracking.experiment=secrets"])
    OmegaConf.update(cfg, "tracking.uri", TRACKING, merge=False)
    params, text = config_record(cfg)
    assert params["tracking.uri"] == redact(TRACKING)
    assert not _leaks(" ".join(params.values())) and not _leaks(text)
    assert OmegaConf.create(text).tracking.uri == redact(TRACKING)
    assert cfg.tracking.uri == TRACKING  # the run still writes to the real store


def test_error_tags_hide_passwords():
    from ablate.tracking.runs import error_text

    error = RuntimeError(f"(psycopg2.OperationalError) connection to {TRACKING} failed: password {PW!r}")
    text = error_text(error, STORAGE, TRACKING)
    assert text.startswith("RuntimeError: ") and not _leaks(text)
