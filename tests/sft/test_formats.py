"""Data formats, detection, chat templating and their error messages (no model needed)."""

from __future__ import annotations

import json

import pytest

from lftrain.data.chat import detect_format, render_with_spans
from lftrain.data.readers import read_table
from lftrain.errors import DataError
from lftrain.tasks.causal_lm_sft import CausalLMSFT
from tests.conftest import write_csv
from tests.sft.conftest import make_chat_tokenizer, write_jsonl


def _task(**kw) -> CausalLMSFT:
    return CausalLMSFT(CausalLMSFT.Config(type="causal-lm-sft", **kw))


def _extract(path, **kw):
    task = _task(**kw)
    return task, task.extract(read_table(str(path)), normalize=True)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_chat_tokenizer(tmp_path_factory.mktemp("tok"))


def test_alpaca_detected_and_input_appended(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Translate", "input": "hola", "output": "hello"},
                                              {"instruction": "Say hi", "input": "", "output": "hi"}])
    _, ex = _extract(path)
    assert ex.fields["messages"][0] == [{"role": "user", "content": "Translate\n\nhola"},
                                        {"role": "assistant", "content": "hello"}]
    assert ex.fields["messages"][1][0]["content"] == "Say hi"


def test_sharegpt_roles_mapped(tmp_path):
    conv = [{"from": "system", "value": "be brief"}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]
    _, ex = _extract(write_jsonl(tmp_path / "s.jsonl", [{"conversations": conv}]))
    assert [m["role"] for m in ex.fields["messages"][0]] == ["system", "user", "assistant"]


def test_chat_messages_in_csv_as_json(tmp_path):
    msgs = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    path = write_csv(tmp_path / "c.csv", [{"messages": json.dumps(msgs)}])
    _, ex = _extract(path)
    assert ex.fields["messages"][0] == msgs


def test_prompt_template_system_and_response_filter(tmp_path):
    rows = [{"text": "great", "category": "fresh"}, {"text": "plot summary", "category": "plot"},
            {"text": "awful", "category": "rotten"}]
    _, ex = _extract(write_csv(tmp_path / "p.csv", rows), format="prompt-response", prompt_template="Review: {text}",
                     response="category", system="Answer in one word.", responses=["fresh", "rotten"])
    assert len(ex) == 2
    assert ex.fields["messages"][1] == [{"role": "system", "content": "Answer in one word."},
                                        {"role": "user", "content": "Review: awful"},
                                        {"role": "assistant", "content": "rotten"}]
    assert ex.where[1][1] == 3  # row numbers still point into the file


def test_undetectable_format_names_columns():
    with pytest.raises(DataError, match="cannot tell the data format.*columns \\(a, b\\)"):
        detect_format(["a", "b"], _task().config)


def test_bad_rows_name_row_and_column(tmp_path):
    path = write_csv(tmp_path / "bad.csv", [{"messages": '[{"role": "user", "content": "x"}, '
                                                         '{"role": "assistant", "content": "y"}]'},
                                            {"messages": "[not json"}])
    with pytest.raises(DataError, match="row 2.*column 'messages'.*not valid JSON"):
        _extract(path)
    last_user = [{"role": "user", "content": "x"}]
    with pytest.raises(DataError, match="row 1.*last message must be the assistant"):
        _extract(write_jsonl(tmp_path / "u.jsonl", [{"messages": last_user}]))
    with pytest.raises(DataError, match="row 1.*column 'response'.*empty"):
        _extract(write_csv(tmp_path / "e.csv", [{"prompt": "p", "response": ""}]))


def test_chat_template_formatting(tok):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "and?"}, {"role": "assistant", "content": "done"}]
    text, spans = render_with_spans(tok, tok.chat_template, msgs)
    assert text == ("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
                    "<|im_start|>user\nand?<|im_end|>\n<|im_start|>assistant\ndone<|im_end|>\n")
    assert [text[a:b] for a, b in spans] == ["yo<|im_end|>\n", "done<|im_end|>\n"]


def test_recipe_template_overrides_tokenizer(tok, tmp_path):
    task = _task(chat_template="{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}"
                               "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}")
    task.prepare_tokenizer(tok)
    text, spans = render_with_spans(tok, task.template, [{"role": "user", "content": "q"},
                                                         {"role": "assistant", "content": "a"}])
    assert text == "[user] q<|im_end|>[assistant] a<|im_end|>"
    assert text[spans[0][0]:spans[0][1]] == "a<|im_end|>"
    (tmp_path / "t.jinja").write_text("{% for m in messages %}{{ m['content'] }}|{% endfor %}")
    task = _task(chat_template=str(tmp_path / "t.jinja"))
    task.prepare_tokenizer(tok)
    assert task.template.startswith("{% for m in messages %}{{ m['content'] }}|")


def test_template_that_is_not_prefix_stable_is_an_input_error(tok):
    from lftrain.data.examples import Examples

    task = _task(chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}{{ messages | length }}")
    task.prepare_tokenizer(tok)
    ex = Examples("f.jsonl", {"messages": [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]},
                  [("f.jsonl", 1, 1)])
    with pytest.raises(DataError, match="f.jsonl, row 1.*prefix differently"):
        task.encode(tok, ex)
