"""`lft generate RUN --prompt ...` and `lft chat RUN`: try a fine-tuned causal language model."""

from __future__ import annotations

import sys


def add_parsers(sub, epilog: str) -> None:
    g = sub.add_parser("generate", help="answer prompts with a causal-lm-sft run", epilog=epilog,
                       description="Generate the model's answer to each --prompt, formatted with the run's chat "
                       "template (and the recipe's system message). Prints one answer per prompt, or JSON lines "
                       "with --json.")
    g.add_argument("run", help="run directory written by `lft train` (task causal-lm-sft)")
    g.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for several)")
    _common(g)
    g.add_argument("--json", action="store_true", help='print {"prompt": ..., "response": ...} JSON lines')

    c = sub.add_parser("chat", help="talk to a causal-lm-sft run in the terminal", epilog=epilog,
                       description="An interactive conversation with the model, formatted with the run's chat "
                       "template. Type a message and press Enter; /reset starts over, /exit (or Ctrl-D) quits.")
    c.add_argument("run", help="run directory written by `lft train` (task causal-lm-sft)")
    _common(c)


def _common(p) -> None:
    p.add_argument("--system", help="system message (default: the recipe's task.system)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate at most (default 128)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")


def run(args) -> int | None:
    from lftrain import api

    if args.command not in ("generate", "chat"):
        return None
    kw = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    if args.command == "generate":
        import json

        answers = api.generate(args.run, args.prompt, system=args.system, **kw)
        for prompt, answer in zip(args.prompt, answers):
            print(json.dumps({"prompt": prompt, "response": answer}, ensure_ascii=False) if args.json else answer,
                  flush=True)
        return 0
    if args.command == "chat":
        session = api.chat(args.run, system=args.system)
        interactive = sys.stdin.isatty()
        if interactive:
            print("chatting with", args.run, "- /reset starts over, /exit quits", flush=True)
        while True:
            try:
                line = input("you> " if interactive else "")
            except EOFError:
                break
            text = line.strip()
            if text in ("/exit", "/quit"):
                break
            if text == "/reset":
                session.reset()
                continue
            if text:
                print(("model> " if interactive else "") + session.send(text, **kw), flush=True)
        return 0
    return None
