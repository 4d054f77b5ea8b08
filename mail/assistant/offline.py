"""The offline default: works with no key and no network (`make run` as it comes).

- Summary: extractive, by TextRank (Mihalcea & Tarau, 2004) written on the standard library.
  Libraries were considered and refused: `sumy` tokenises with NLTK's punkt, which must be
  downloaded at run time; `summa` was last released in 2019 and pulls NumPy and SciPy for what is
  a 20-line power iteration here. Sentences are compared by shared content words through an
  inverted index, so a 50-message thread costs milliseconds, not a dense n² matrix.
- Reply draft: a scaffold built from the thread (greeting, one placeholder per question asked,
  sign-off), for the user to fill in.
- Triage: rules on headers and text (List-Unsubscribe → newsletter, automated senders →
  notification, direct questions → needs reply).
Everything it returns is labelled offline by the caller.
"""

import email.utils
import math
import re
from collections import defaultdict

from mail.assistant.thread import MailText

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n{2,}")
_WORD = re.compile(r"[^\W\d_]{2,}", re.UNICODE)
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves also get got hi hello thanks thank regards
best dear please let know one two may might much many re fw fwd would could us ll ve
""".split())
MAX_SENTENCES = 400


def _sentences(text: str) -> list[str]:
    out = []
    for chunk in _SENTENCE.split(text):
        sentence = " ".join(chunk.split())
        if 20 <= len(sentence) <= 600 and len(_WORD.findall(sentence)) >= 4:
            out.append(sentence)
    return out


def textrank(sentences: list[str], *, top: int = 4, iterations: int = 30, damping: float = 0.85) -> list[int]:
    """Indices of the `top` most central sentences, in their original order."""
    words = [frozenset(w for w in (m.lower() for m in _WORD.findall(s)) if w not in STOPWORDS) for s in sentences]
    index: dict[str, list[int]] = defaultdict(list)
    for i, ws in enumerate(words):
        for w in ws:
            index[w].append(i)
    overlap: list[dict[int, int]] = [defaultdict(int) for _ in sentences]
    for postings in index.values():
        if len(postings) > 200:  # a word in nearly every sentence says nothing about centrality
            continue
        for a in postings:
            for b in postings:
                if a < b:
                    overlap[a][b] += 1
    edges: list[dict[int, float]] = [{} for _ in sentences]
    for a, row in enumerate(overlap):
        for b, count in row.items():
            norm = math.log(len(words[a]) + 1) + math.log(len(words[b]) + 1)
            weight = count / norm if norm else 0.0
            if weight:
                edges[a][b] = weight
                edges[b][a] = weight
    # Power iteration. Each sentence's score is divided by its total edge weight once per round
    # (not once per edge), and the loop stops when the scores settle: a 50-message thread of ~200
    # densely linked sentences stays within the benchmark's budget (docs/BENCHMARKS.md).
    inverse = [1 / total if total else 0.0 for total in (sum(row.values()) for row in edges)]
    rows = [tuple(row.items()) for row in edges]
    score = [1.0] * len(sentences)
    for _ in range(iterations):
        share = [s * i for s, i in zip(score, inverse, strict=True)]
        new = [(1 - damping) + damping * sum(share[b] * w for b, w in row) for row in rows]
        settled = max((abs(a - b) for a, b in zip(new, score, strict=True)), default=0.0) < 1e-6
        score = new
        if settled:
            break
    n = len(sentences)
    best = sorted(range(n), key=lambda i: (-score[i], i))[:top]
    return sorted(best)


def _name(address: str) -> str:
    name, addr = email.utils.parseaddr(address)
    return name or addr or address


def summarise(thread: list[MailText]) -> str:
    """A short extractive summary of a thread: who, how many, and its most central sentences."""
    if not thread:
        return "Nothing to summarise."
    people = []
    for item in thread:
        who = _name(item.sender)
        if who and who not in people:
            people.append(who)
    sentences: list[str] = []
    for item in thread:
        sentences.extend(_sentences(item.text))
    sentences = sentences[-MAX_SENTENCES:]
    header = (f"{len(thread)} message{'s' if len(thread) != 1 else ''}"
              f"{' between ' + ', '.join(people[:5]) if people else ''}"
              f"{' and others' if len(people) > 5 else ''}. Latest from {_name(thread[-1].sender)}.")
    if not sentences:
        snippet = " ".join(thread[-1].text.split())[:300]
        return header + (f"\n- {snippet}" if snippet else "")
    picked = textrank(sentences, top=3 if len(sentences) < 30 else 5)
    return header + "\n" + "\n".join(f"- {sentences[i]}" for i in picked)


_QUESTION = re.compile(r"[^.!?\n]{8,300}\?")
GREETINGS = {"neutral": "Hi {name},", "friendly": "Hi {name}!", "formal": "Dear {name},", "brief": "{name},"}
CLOSINGS = {"neutral": "Best regards,", "friendly": "Thanks so much,", "formal": "Kind regards,",
            "brief": "Thanks,"}


def questions(text: str) -> list[str]:
    return [" ".join(q.split()) for q in _QUESTION.findall(text)][:5]


def reply_scaffold(thread: list[MailText], *, tone: str = "neutral", instruction: str = "") -> str:
    """A reply skeleton: greeting, a placeholder under each question the last message asks, sign-off."""
    last = thread[-1] if thread else MailText("", [], "", "", "")
    first_name = (_name(last.sender).split() or ["there"])[0].strip('"')
    lines = [GREETINGS.get(tone, GREETINGS["neutral"]).format(name=first_name), ""]
    subject = last.subject[4:] if last.subject.lower().startswith("re: ") else last.subject
    lines.append(f"Thank you for your message{f' about {subject}' if subject else ''}.")
    asked = questions(last.text)
    if asked:
        lines.append("")
        for question in asked:
            lines.extend([f"> {question}", "[your answer]", ""])
    else:
        lines.extend(["", "[your reply]", ""])
    if instruction:
        lines.extend([f"[to cover: {' '.join(instruction.split())[:300]}]", ""])
    lines.append(CLOSINGS.get(tone, CLOSINGS["neutral"]))
    return "\n".join(lines)


_AUTOMATED = re.compile(
    r"(?i)(^|[<\s.+_-])(no-?reply|do-?not-?reply|notifications?|notify|alerts?|mailer-daemon|postmaster|"
    r"bounces?|automated|daemon)[^@]*@")
_URGENT = re.compile(r"(?i)\b(urgent|asap|as soon as possible|today|deadline|immediately|overdue|eod)\b")


def triage(item: MailText, *, me: str = "") -> tuple[str, str, str]:
    """(category, priority, reason) by rules. `me` is the mailbox's address (to tell To from Cc)."""
    headers = item.headers
    precedence = headers.get("precedence", "").lower()
    if "list-unsubscribe" in headers or "list-id" in headers or precedence in ("bulk", "list"):
        return "newsletter", "low", "list headers (List-Unsubscribe/List-Id/Precedence)"
    auto = headers.get("auto-submitted", "").lower()
    if (auto and auto != "no") or "x-auto-response-suppress" in headers or headers.get("return-path") == "<>" \
            or _AUTOMATED.search(email.utils.parseaddr(item.sender or "")[1]):  # the address, not the name
        return "notification", "low", "automated sender"
    addressed = not me or any(me.lower() in addr.lower() for addr in item.to)
    if addressed and questions(item.text):
        return "needs_reply", "high" if _URGENT.search(item.subject + " " + item.text[:2000]) else "normal", \
            "a direct question"
    return "fyi", "normal", "no question for you"
