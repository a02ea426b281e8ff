"""Prompt sets: built-ins, files, hf: specs; scoring and evaluation samples never overlap."""

import json

import pytest

from core.errors import WorkbenchError
from core.data.prompt_sets import load_prompt_set
from core.data.tasks import agreement_items, agreement_subject_items, ioi_items
from core.data.tokens import encode_each, pack_windows


@pytest.mark.parametrize("name,kind", [("general", "text"), ("repetition", "prompts"), ("ioi", "task"), ("agreement", "task"),
                                       ("agreement-subject", "task")])
def test_builtin_sets_have_disjoint_splits(name, kind):
    ps = load_prompt_set(f"builtin:{name}")
    assert ps.kind == kind
    assert len(ps.score) >= 20 and len(ps.eval) >= 6
    assert not set(ps.score) & set(ps.eval)


def test_task_items_are_well_formed():
    for it in ioi_items(50, seed=3):
        assert it.answer != it.distractor and it.answer in it.prompt and it.distractor in it.prompt
        assert it.prompt.count(it.distractor) == 2  # the subject is repeated: that is what makes it IOI
    for it in agreement_items(50, seed=3):
        assert {it.answer, it.distractor} in ({"is", "are"}, {"was", "were"}, {"has", "have"})
    for name in ("ioi", "agreement"):
        ps = load_prompt_set(f"builtin:{name}")
        assert {i.prompt for i in ps.task_eval}.isdisjoint({i.prompt for i in ps.task_score})
        assert len(ps.task_score) == len(ps.task_eval) == 64


def test_agreement_subject_has_agreements_items_with_the_subjects_number_flipped():
    attractor, subject = agreement_items(40, seed=5), agreement_subject_items(40, seed=5)
    assert [(i.prompt, i.answer, i.distractor) for i in attractor] == [(i.prompt, i.answer, i.distractor) for i in subject]
    for a, s in zip(attractor, subject):
        clean, by_attractor, by_subject = a.prompt.split(), a.corrupted.split(), s.corrupted.split()
        assert by_subject[1] != clean[1] and by_subject[2:] == clean[2:]  # the subject changed, nothing else
        assert by_attractor[1] == clean[1] and by_attractor != clean  # agreement's own: the subject stays


@pytest.mark.slow
def test_the_subject_counterpart_changes_the_real_models_answer(embedded):
    """The point of the subject flip: on its counterparts the model prefers the distractor, on the attractor
    flip it still prefers the answer."""
    from dataclasses import replace as swap

    from core.evaluation.metrics import task_logit_diffs

    items = load_prompt_set("builtin:agreement-subject").task_eval
    own = load_prompt_set("builtin:agreement").task_eval
    clean = task_logit_diffs(embedded.model, embedded.tokenizer, items)
    by_subject = task_logit_diffs(embedded.model, embedded.tokenizer, [swap(i, prompt=i.corrupted) for i in items])
    by_attractor = task_logit_diffs(embedded.model, embedded.tokenizer, [swap(i, prompt=i.corrupted) for i in own])
    assert clean.mean() > 0 and by_subject.mean() < 0 < by_attractor.mean()
    assert (by_subject < 0).float().mean() > 0.7


def test_txt_file_paragraphs(tmp_path):
    f = tmp_path / "ref.txt"
    f.write_text("first one\nstill first\n\nsecond\n\n\nthird\n\nfourth\n\nfifth\n")
    ps = load_prompt_set(str(f))
    assert ps.score == ["first one still first", "second", "third", "fifth"]
    assert ps.eval == ["fourth"]


def test_jsonl_text_and_prompt_rows(tmp_path):
    f = tmp_path / "docs.jsonl"
    f.write_text("\n".join(json.dumps({"text": f"doc {i}"}) for i in range(8)))
    assert load_prompt_set(str(f)).kind == "text"
    g = tmp_path / "prompts.jsonl"
    g.write_text("\n".join(json.dumps({"prompt": f"say {i}"}) for i in range(8)))
    assert load_prompt_set(str(g)).kind == "prompts"


@pytest.mark.parametrize("content,message", [
    ("", "holds no samples"),
    ("only one paragraph", "at least 2"),
])
def test_empty_or_tiny_files_are_refused(tmp_path, content, message):
    f = tmp_path / "x.txt"
    f.write_text(content)
    with pytest.raises(WorkbenchError, match=message):
        load_prompt_set(str(f))


def test_bad_jsonl_and_missing_file(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(WorkbenchError, match=r"bad.jsonl:2 is not JSON"):
        load_prompt_set(str(f))
    with pytest.raises(WorkbenchError, match="not found"):
        load_prompt_set(str(tmp_path / "missing.txt"))
    with pytest.raises(WorkbenchError, match="unknown built-in"):
        load_prompt_set("builtin:nope")


def test_hf_spec_loads_through_datasets(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text("\n".join(json.dumps({"body": f"row number {i}", "id": i}) for i in range(12)))
    ps = load_prompt_set(f"hf:json,data_files={f},split=train,column=body")
    assert len(ps.score) == 9 and len(ps.eval) == 3 and ps.score[0] == "row number 0"
    with pytest.raises(WorkbenchError, match="no column"):
        load_prompt_set(f"hf:json,data_files={f},column=missing")
    with pytest.raises(WorkbenchError, match="bad hf: spec"):
        load_prompt_set("hf:json,colour=red")


def test_windows_are_bounded_by_seq_len(tokenizer):
    texts = load_prompt_set("builtin:general").score
    windows = pack_windows(tokenizer, texts, 64)
    assert len(windows) > 10 and all(2 <= len(w) <= 64 for w in windows)
    assert all(len(w) == 64 for w in windows[:-1])
    assert all(len(s) <= 16 for s in encode_each(tokenizer, texts, 16))
    with pytest.raises(WorkbenchError, match="seq-len"):
        pack_windows(tokenizer, texts, 1)


class _BosFirst:
    """A tokenizer that puts <bos> before every text by default, as Gemma's and Llama's do."""

    def __init__(self, tok):
        self.tok, self.bos_token_id, self.eos_token_id = tok, tok.bos_token_id, tok.eos_token_id

    def __call__(self, text, add_special_tokens=True):
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}


def test_windows_and_prompts_start_the_way_the_tokenizer_starts_a_text(tokenizer):
    import copy

    from core.data.tokens import bos_prefix, encode

    texts = load_prompt_set("builtin:general").score
    assert tokenizer.bos_token_id is None and pack_windows(tokenizer, texts, 32)[0][:3] == tokenizer(texts[0])["input_ids"][:3]
    tok = copy.deepcopy(tokenizer)  # the shared fixture stays as it is
    tok.add_special_tokens({"bos_token": "<bos>"})
    bos = tok.bos_token_id
    assert bos_prefix(tok) == []  # named but never put first (SmolLM2's <|im_start|>): not added
    tok = _BosFirst(tok)
    assert bos_prefix(tok) == [bos]
    windows = pack_windows(tok, texts, 32)
    assert all(w[0] == bos and w.count(bos) == 1 for w in windows)
    assert all(len(w) == 32 for w in windows[:-1])
    assert encode(tok, "The kettle")[0] == bos and encode_each(tok, ["a b c"], 8)[0][0] == bos
    stream = [t for w in windows for t in w[1:]]  # nothing is lost between windows
    assert stream[:40] == (tok(texts[0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id])[:40]
