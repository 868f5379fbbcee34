#!/usr/bin/env python3
"""Writes fixtures/chat-templates/: one folder per chat-template family (tokenizer.json from
fixtures/tokenizers/, tokenizer_config.json / chat_template.jinja with the template of
fixtures/chat-templates/templates/) and its expected.json, plus snippets.json.

expected.json, per conversation: the text transformers' apply_chat_template(tokenize=False)
renders (add_generation_prompt False and True), and the ids and labels of the row under
--train-on last and all-assistant, computed as Sources/Mask/Data/ChatData.swift defines them
(ChatRowBuilder): full = render(turns up to the last assistant turn); per trained assistant
turn a, P = render(turns[:a], add_generation_prompt=True), F = render(turns[:a+1]); P must
prefix F; the span is [len(P), E) with E the common-prefix length of F and full, E > len(P),
and F[E:] must end full; full is cut at the spans, each piece encoded on its own
(add_special_tokens=False), labels = ids inside spans, -100 outside.

snippets.json: small templates rendered by jinja2 in transformers' own environment
(_compile_jinja_template: trim_blocks, lstrip_blocks, loopcontrols, generation tag, tojson,
raise_exception, strftime_now, namespace), with the output or the error.

    python3 scripts/make-chat-template-fixtures.py
"""
import json, os, shutil, sys
from transformers import AutoTokenizer
from transformers.utils.chat_template_utils import _compile_jinja_template
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "chat-templates")
TEMPLATES = os.path.join(OUT, "templates")

# family, template file, tokenizer fixture, how the template is stored, supports tools
FAMILIES = [
    ("llama3.1", "llama3.1.jinja", "llama3", "string", True),
    ("llama3.2", "llama3.2.jinja", "llama3", "string", True),
    ("qwen2.5", "qwen2.5.jinja", "qwen2", "string", True),
    ("qwen3", "qwen3.jinja", "qwen2", "jinja-file", True),
    ("gemma2", "gemma2.jinja", "gemma", "string", False),
    ("gemma3", "gemma3.jinja", "gemma", "list", False),
    ("phi3", "phi3.jinja", "phi3", "string", False),
    ("mistral-v0.3", "mistral-v0.3.jinja", "mistral", "string", True),
]

def u(c): return {"role": "user", "content": c}
def a(c): return {"role": "assistant", "content": c}
SYS = {"role": "system", "content": "You are a terse assistant."}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city, e.g. Paris"},
                         "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}]
TOOL_TURNS = [u("What's the weather in Paris?"),
              {"role": "assistant", "tool_calls": [{"id": "call12345", "type": "function",
               "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
              {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "{\"temperature\": 18}"},
              a("It is 18 °C in Paris.")]

COMMON = [
    ("single", [u("What is the capital of France?"), a("Paris.")], None, {}),
    ("system", [SYS, u("What is the capital of France?"), a("Paris.")], None, {}),
    ("multi", [u("Hi there!"), a("Hello! How can I help?"), u("Tell me a joke."), a("Why did the chicken cross the road?")], None, {}),
    ("multi-system", [SYS, u("Hi there!"), a("Hello! How can I help?"), u("Tell me a joke."), a("To get to the other side.")], None, {}),
    ("trailing-user", [u("Name a colour."), a("Blue."), u("Another?")], None, {}),
    ("whitespace", [u("  Ünïcödé text\nwith two lines  "), a(" Trimmed?\n\n  ")], None, {}),
    ("null-field", [u("Hello"), {"role": "assistant", "content": "Hi!", "tool_calls": None}], None, {}),
]
EXTRA = {
    "llama3.1": [("tools", TOOL_TURNS, TOOLS, {}), ("tools-system", [SYS] + TOOL_TURNS, TOOLS, {}),
                 ("tools-in-system", TOOL_TURNS, TOOLS, {"tools_in_user_message": False}),
                 ("date", [u("What day is it?"), a("I cannot know.")], None, {"date_string": "05 Mar 2025"})],
    "llama3.2": [("tools", TOOL_TURNS, TOOLS, {"date_string": "05 Mar 2025"}),
                 ("date", [SYS, u("What day is it?"), a("I cannot know.")], None, {"date_string": "05 Mar 2025"})],
    "qwen2.5": [("tools", TOOL_TURNS, TOOLS, {}), ("tools-system", [SYS] + TOOL_TURNS, TOOLS, {})],
    "qwen3": [("tools", TOOL_TURNS, TOOLS, {}), ("tools-system", [SYS] + TOOL_TURNS, TOOLS, {}),
              ("think-inline", [u("2+2?"), a("<think>\nSimple sum.\n</think>\n\n4")], None, {}),
              ("think-field", [u("2+2?"), {"role": "assistant", "content": "4", "reasoning_content": "Simple sum."}], None, {}),
              ("think-multi", [u("2+2?"), {"role": "assistant", "content": "4", "reasoning_content": "Sum."}, u("3+3?"),
                               {"role": "assistant", "content": "6", "reasoning_content": "Also a sum."}], None, {}),
              ("no-thinking", [u("2+2?"), a("4")], None, {"enable_thinking": False})],
    "gemma3": [("content-list", [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                                 {"role": "user", "content": [{"type": "text", "text": "Describe Paris."}]}, a("A city.")], None, {})],
    "mistral-v0.3": [("tools", TOOL_TURNS, TOOLS, {})],
}

class Refused(Exception):
    pass

def render(tok, messages, tools, agp, kwargs):
    return tok.apply_chat_template(messages, tools=tools, add_generation_prompt=agp, tokenize=False, **kwargs)

def pieces(tok, messages, tools, kwargs, train_on):
    assistants = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if not assistants:
        raise Refused("no-assistant")
    last = assistants[-1]
    conv = messages[:last + 1]
    full = render(tok, conv, tools, False, kwargs)
    spans = []
    for i in ([last] if train_on == "last" else assistants):
        if i == 0:
            raise Refused("first")
        p = render(tok, conv[:i], tools, True, kwargs)
        f = full if i == last else render(tok, conv[:i + 1], tools, False, kwargs)
        if not f.startswith(p):
            raise Refused("prompt-not-prefix")
        e = 0
        while e < len(f) and e < len(full) and f[e] == full[e]:
            e += 1
        if not (e > len(p) and full.endswith(f[e:])):
            raise Refused("turn-differs")
        if spans and len(p) < spans[-1][1]:
            raise Refused("overlap")
        spans.append((len(p), e))
    out, at = [], 0
    for s, e in spans:
        if s > at:
            out.append((full[at:s], False))
        out.append((full[s:e], True))
        at = e
    if at < len(full):
        out.append((full[at:], False))
    return out

def outcome(fn):
    try:
        return fn()
    except Refused as r:
        return {"error": r.args[0]}
    except Exception as e:  # jinja2 TemplateError from raise_exception, and the like
        return {"error": "raise:" + str(e) if type(e).__name__ == "TemplateError" else type(e).__name__ + ":" + str(e)}

def family(name, template_file, tok_dir, form, tools_ok):
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    src = os.path.join(ROOT, "fixtures", "tokenizers", tok_dir)
    shutil.copy(os.path.join(src, "tokenizer.json"), d)
    config = json.load(open(os.path.join(src, "tokenizer_config.json")))
    template = open(os.path.join(TEMPLATES, template_file)).read()
    if form == "string":
        config["chat_template"] = template
    elif form == "list":
        config["chat_template"] = [{"name": "default", "template": template}]
    else:
        with open(os.path.join(d, "chat_template.jinja"), "w") as f:
            f.write(template)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
    tok = AutoTokenizer.from_pretrained(d)
    raw = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    cases = []
    for cname, messages, tools, kwargs in COMMON + EXTRA.get(name, []):
        # A template that prints today's date (Llama 3.x: strftime_now unless date_string is given)
        # gets a fixed one, so that the fixture holds on any day (snippets.json tests strftime_now).
        if "strftime_now" in template and "date_string" not in (kwargs or {}):
            kwargs = dict(kwargs or {}, date_string="26 Jul 2024")
        row = {"messages": messages}
        if tools is not None:
            row["tools"] = tools
        if kwargs:
            row["chat_template_kwargs"] = kwargs
        case = {"name": cname, "row": json.dumps(row, ensure_ascii=False)}
        clean = [{k: v for k, v in m.items() if v is not None} for m in messages]
        for agp in (False, True):
            case["render_agp" if agp else "render"] = outcome(lambda: {"text": render(tok, clean, tools, agp, kwargs)})
        for train_on in ("last", "all-assistant"):
            def tokens():
                ids, labels, texts = [], [], []
                for text, trained in pieces(tok, messages, tools, kwargs, train_on):
                    t = raw.encode(text, add_special_tokens=False).ids
                    ids += t
                    labels += t if trained else [-100] * len(t)
                    texts.append([text, trained])
                return {"ids": ids, "labels": labels, "pieces": texts}
            case[train_on] = outcome(tokens)
        cases.append(case)
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"family": name, "template": template_file, "tokenizer": tok_dir, "form": form,
                   "special_tokens": tok.special_tokens_map, "cases": cases}, f, indent=1, ensure_ascii=False)
    return len(cases)

SNIPPETS = [
    # whitespace control and HF's trim_blocks / lstrip_blocks
    ("{% if true %}\nyes\n{% endif %}\n", {}),
    ("  {% if true %}\n  yes\n  {% endif %}\nend", {}),
    ("a  {%- if true -%}  b  {%- endif -%}  c", {}),
    ("a {{- ' b ' -}} c", {}),
    ("x\n{# a comment #}\ny", {}),
    ("x {#- comment -#} y", {}),
    ("line\n  {%+ if true %}kept{% endif %}", {}),
    ("{% if true +%}\nkept newline{% endif %}", {}),
    ("a\r\nb\rc\n", {}),
    ("trailing\n\n", {}),
    ("{{ 'x' }}\n{{ 'y' }}", {}),
    ("  {{ 'v' }}\n  {% set x = 1 %}\n  z", {}),
    # for loops
    ("{% for x in xs %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }} {% endfor %}", {"xs": ["a", "b", "c"]}),
    ("{% for x in xs if x > 1 %}{{ x }}{{ ',' if not loop.last }}{% else %}none{% endfor %}", {"xs": [1, 2, 3]}),
    ("{% for x in [] %}{{ x }}{% else %}empty{% endfor %}", {}),
    ("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("{% for k in d %}{{ k }}{% endfor %}", {"d": {"z": 1, "y": 2}}),
    ("{% for c in 'abc' %}{{ c }}-{% endfor %}", {}),
    ("{% for x in xs %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}", {"xs": [1, 2, 3, 4, 5]}),
    ("{% for x in xs %}{{ loop.previtem }}>{{ x }}>{{ loop.nextitem }} {% endfor %}", {"xs": [1, 2, 3]}),
    ("{% for x in xs %}{{ loop.cycle('odd', 'even') }}{% endfor %}", {"xs": [1, 2, 3]}),
    ("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}", {}),
    ("{% set x = 0 %}{% for i in [1, 2, 3] %}{{ x }}{% set x = x + i %}{{ x }},{% endfor %}{{ x }}", {}),
    ("{% for m in messages | reverse %}{{ m }}{% endfor %}", {"messages": [1, 2, 3]}),
    ("{% for x in xs|selectattr('ok') %}{{ x.n }}{% endfor %}", {"xs": [{"n": 1, "ok": True}, {"n": 2, "ok": False}, {"n": 3}]}),
    ("{% for i in range(3) %}{{ i }}{% endfor %}{% for i in range(1, 10, 3) %}{{ i }}{% endfor %}", {}),
    # if / elif / else, set, namespace
    ("{% if x == 1 %}one{% elif x == 2 %}two{% else %}many{% endif %}", {"x": 2}),
    ("{% if x %}t{% else %}f{% endif %}{% if not y %}ny{% endif %}", {"x": [], "y": ""}),
    ("{% set a, b = 1, 2 %}{{ a }}{{ b }}", {}),
    ("{% set ns = namespace(found=false, n=0) %}{% for x in xs %}{% if x > 2 %}{% set ns.found = true %}{% set ns.n = ns.n + x %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.n }}", {"xs": [1, 3, 5]}),
    ("{% set s %}block {{ 1 + 1 }}{% endset %}[{{ s }}]", {}),
    ("{% set s | upper %}shout{% endset %}{{ s }}", {}),
    ("{% if true %}{% set inner = 5 %}{% endif %}{{ inner }}", {}),
    ("{% for i in [1] %}{% set leaked = 1 %}{% endfor %}[{{ leaked }}]", {}),
    # macros and call
    ("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', '?') }} {{ greet(name='Cy', punct='.') }}", {}),
    ("{% macro wrap() %}<{{ caller() }}>{% endmacro %}{% call wrap() %}inside{% endcall %}", {}),
    ("{% macro row(x) %}[{{ caller(x * 2) }}]{% endmacro %}{% call(v) row(4) %}v={{ v }}{% endcall %}", {}),
    ("{% macro m() %}{{ g }}{% endmacro %}{% set g = 'late' %}{{ m() }}", {}),
    ("{% filter upper %}up {{ 'here' }}{% endfilter %}", {}),
    ("{% generation %}gen {{ 1 }}{% endgeneration %}", {}),
    # expressions and operators
    ("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ 7 / 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 10 - 2 - 3 }}", {}),
    ("{{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1.0 }} {{ 3 / 1 }} {{ 1e-7 }} {{ 2.5e16 }} {{ 123456.789 }}", {}),
    ("{{ 'a' ~ 1 ~ none ~ true }} {{ 'ab' * 3 }} {{ [1] + [2] }} {{ 'x' + 'y' }}", {}),
    ("{{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ 1 < 2 < 3 }} {{ [1, 2] == [1, 2] }} {{ {'a': 1} == {'a': 1} }}", {}),
    ("{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'abc' }} {{ not 'a' in 'b' }}", {}),
    ("{{ x and y }} {{ x or y }} {{ none or 'default' }} {{ 0 and 1 }}", {"x": "X", "y": ""}),
    ("{{ 'yes' if x else 'no' }} {{ 'only' if y }}|", {"x": 1, "y": 0}),
    ("{{ x }} {{ y }} {{ z }} {{ w }} {{ n }}", {"x": [1, "a", None, True, 1.5], "y": {"k": "v", "n": [1]}, "z": None, "w": False, "n": "it's"}),
    ("{{ 'quote\"s' }} {{ [\"it's\", 'a\"b', 'both\\'\"', 'nl\\n'] }}", {}),
    ("{{ xs[0] }} {{ xs[-1] }} {{ xs[1:] }} {{ xs[:-1] }} {{ xs[::-1] }} {{ xs[::2] }} {{ xs[5] }}| {{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ 'héllo'[1] }}", {"xs": [1, 2, 3, 4]}),
    ("{{ d.a }} {{ d['b'] }} {{ d.get('c', 'dflt') }} {{ d.get('a') }} {{ d.get('zz') }} {{ d.missing }}|", {"d": {"a": 1, "b": 2}}),
    ("{{ d.keys() | list }} {{ d.values() | list }}{% for k, v in d.items() %} {{ k }}:{{ v }}{% endfor %}", {"d": {"a": 1, "b": [2]}}),
    ("{{ {'x': 1, 'y': [1, 2]} }} {{ (1, 2) | list }} {{ [] }} {{ {} }}", {}),
    ("{{ -x }} {{ +x }} {{ - 2 ** 2 }}", {"x": 3}),
    # tests
    ("{{ x is defined }} {{ y is undefined }} {{ n is none }} {{ s is string }} {{ 1 is number }} {{ 1.5 is number }} {{ true is number }} {{ d is mapping }} {{ l is iterable }} {{ s is iterable }} {{ l is sequence }} {{ d is sequence }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }}", {"x": 1, "n": None, "s": "a", "d": {}, "l": []}),
    ("{{ true is true }} {{ 1 is true }} {{ false is false }} {{ x is eq 2 }} {{ x is equalto 2 }} {{ x is ne 2 }} {{ 'a' is in 'abc' }} {{ x is not none }} {{ 1 is integer }} {{ 1.0 is float }} {{ true is boolean }} {{ 'abc' is lower }} {{ 'ABC' is upper }}", {"x": 2}),
    ("{{ x is gt 1 }} {{ x is lt 1 }} {{ x is ge 2 }} {{ x is le 1 }} {{ none is sameas none }} {{ f is callable }}", {"x": 2}),
    # filters
    ("{{ '  pad  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ 'Hi' | upper }} {{ 'Hi' | lower }} {{ 'hello world' | capitalize }} {{ 'hello wORLD-x(y' | title }}", {}),
    ("{{ xs | length }} {{ 'héllo' | length }} {{ d | length }} {{ xs | count }} {{ u | length }}", {"xs": [1, 2, 3], "d": {"a": 1}}),
    ("{{ u | default('dflt') }} {{ '' | default('dflt') }} {{ '' | default('dflt', true) }} {{ none | default('dflt') }} {{ u | d('d') }}", {}),
    ("{{ xs | join(', ') }} {{ xs | join }} {{ ds | join('-', attribute='n') }}", {"xs": ["a", "b", 3], "ds": [{"n": 1}, {"n": 2}]}),
    ("{% for k, v in d | items %}{{ k }}={{ v }} {% endfor %}{{ u | items | list }} {{ d | items | list | length }}", {"d": {"a": 1, "b": 2}}),
    ("{{ xs | selectattr('role', 'equalto', 'user') | map(attribute='c') | list }} {{ xs | rejectattr('role', 'eq', 'user') | list | length }}", {"xs": [{"role": "user", "c": 1}, {"role": "bot", "c": 2}, {"role": "user", "c": 3}]}),
    ("{{ xs | selectattr('a.b') | list }} {{ xs | map(attribute='a.b', default=0) | list }}", {"xs": [{"a": {"b": 1}}, {"a": {}}, {"a": {"b": 0}}]}),
    ("{{ xs | map('upper') | join }} {{ xs | select('string') | list }} {{ ys | reject('none') | list }} {{ ys | select | list }}", {"xs": ["a", "b"], "ys": [1, None, 0, 2]}),
    ("{{ xs | first }} {{ xs | last }} {{ 'abc' | first }} {{ 'abc' | last }} {{ [] | first }}|", {"xs": [1, 2, 3]}),
    ("{{ 'a,b' | replace(',', ';') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'ab' | replace('', '-') }}", {}),
    ("{{ 1 | string }} {{ none | string }} {{ [1, 'a'] | string }} {{ '42' | int }} {{ '3.7' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ '1.5' | float }} {{ 7 | float }}", {}),
    ("{{ 2.5 | round }} {{ 3.5 | round }} {{ 3.14159 | round(2) }} {{ 3.14159 | round(2, 'floor') }} {{ 2.1 | round(0, 'ceil') }} {{ 3 | round }}", {}),
    ("{{ '<b>' | safe }} {{ '<a & \"b\">' | escape }} {{ '<x>' | e }}", {}),
    ("{{ 'a\nb\n\nc' | indent }}|{{ 'a\nb' | indent(2, true) }}|{{ 'a\n\nb' | indent(2, blank=true) }}|{{ 'x\ny' | indent('> ') }}", {}),
    ("{% for k, v in d | dictsort %}{{ k }}{{ v }}{% endfor %} {% for k, v in d | dictsort(reverse=true) %}{{ k }}{% endfor %} {% for p in d | dictsort(by='value') %}{{ p[0] }}{{ p[1] }}{% endfor %}", {"d": {"b": 2, "A": 3, "c": 1}}),
    ("{{ xs | unique | list }} {{ xs | unique(case_sensitive=true) | list }} {{ [3, 1, 2] | sort }} {{ ['b', 'A', 'c'] | sort }} {{ ['b', 'A'] | sort(case_sensitive=true) }} {{ [3, 1] | sort(reverse=true) }}", {"xs": ["a", "A", "b", "a"]}),
    ("{{ ds | sort(attribute='n') | map(attribute='n') | list }} {{ [1, 5, 3] | max }} {{ [4, 2] | min }} {{ [1, 2, 3] | sum }} {{ -3 | abs }} {{ 'a b  c' | wordcount }}", {"ds": [{"n": 2}, {"n": 1}]}),
    ("{{ 'abc' | reverse }} {{ [1, 2] | reverse | list }} {{ 'ab' | list }}", {}),
    ("{{ '%s is %d' | format('x', 3) }} {{ '%s-%s' % ('a', 'b') }} {{ '%s' % 'one' }}", {}),
    # tojson as transformers overrides it
    ("{{ x | tojson }}", {"x": {"b": [1, 2.5, None, True], "a": "é\"\\\n\t<>&'", "n": {}}}),
    ("{{ x | tojson(indent=4) }}", {"x": {"type": "function", "function": {"name": "f", "parameters": {"a": [1, {"b": []}], "c": {}}}}}),
    ("{{ x | tojson(indent=2, sort_keys=true) }}|{{ x | tojson(separators=(',', ':')) }}|{{ x | tojson(ensure_ascii=true) }}", {"x": {"z": "ü😀", "a": [1, 2]}}),
    ("{{ 'str' | tojson }} {{ 1.0 | tojson }} {{ none | tojson }} {{ [] | tojson(indent=2) }}", {}),
    # string methods
    ("{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ 'xxaxx'.strip('x') }}|{{ '\n\nhi\n'.strip('\n') }}", {"s": "  sp  "}),
    ("{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a-b-c'.rsplit('-', 1) }} {{ 'l1\nl2'.splitlines() }}", {}),
    ("{{ 'hello'.startswith('he') }} {{ 'hello'.endswith('lo') }} {{ 'hello'.startswith(('x', 'h')) }} {{ 'abc'.replace('b', 'B') }} {{ 'Hi'.upper() }} {{ 'Hi'.lower() }} {{ 'hello world'.title() }} {{ 'hello'.capitalize() }}", {}),
    ("{{ 'abcabc'.find('c') }} {{ 'abcabc'.rfind('c') }} {{ 'abcabc'.count('b') }} {{ ', '.join(['a', 'b']) }} {{ '{} and {}'.format('x', 'y') }} {{ '{name}!'.format(name='N') }} {{ '12'.isdigit() }}", {}),
    ("{{ content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') }}|{{ content.split('</think>')[-1].lstrip('\n') }}", {"content": "<think>\nreason\n</think>\n\nanswer"}),
    # globals
    ("{{ raise_exception('Roles must alternate') }}", {}),
    ("{% if x %}{{ raise_exception('bad: ' ~ x) }}{% endif %}ok", {"x": 0}),
    ("{{ strftime_now is defined }} {{ namespace is defined }} {{ dict(a=1) }}", {}),
    ("{{ bos_token }}{{ messages[0].content }}{{ eos_token }}", {"bos_token": "<s>", "eos_token": "</s>", "messages": [{"content": "c"}]}),
    # errors jinja2 also raises
    ("{{ x.y.z }}", {}),
    ("{{ 'a' + 1 }}", {}),
    ("{{ 1 / 0 }}", {}),
    ("{{ u + 1 }}", {}),
    ("{% for %}", {}),
    ("{% if true %}unclosed", {}),
    ("{{ x | nosuchfilter }}", {"x": 1}),
    ("{{ [1].append(2) }}", {}),
    ("{% set ns = namespace() %}{% set ns._x = 1 %}", {}),
]

def snippets():
    out = []
    for template, variables in SNIPPETS:
        try:
            out.append({"template": template, "vars": variables, "output": _compile_jinja_template(template).render(**variables)})
        except Exception as e:
            out.append({"template": template, "vars": variables, "error": type(e).__name__ + ": " + str(e)})
    with open(os.path.join(OUT, "snippets.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
    return len(out)

if __name__ == "__main__":
    for fam in FAMILIES:
        print(fam[0], family(*fam), "conversations", file=sys.stderr)
    print("snippets", snippets(), file=sys.stderr)
