"""The one definition of secret formats: the L1 `secrets` rule and log redaction both use it.

Each format is a regex and a judgement of what it matched:
- REAL: a credential. The rule fails the output as UNSAFE; redaction masks it.
- EXAMPLE: shaped like a credential but not one that grants access: a documented example
  (AKIAIOSFODNN7EXAMPLE and AWS's matching secret, jwt.io's sample token, the Azurite
  development key), a dummy fill (`sk-xxxxxxxx…`, `abcdefgh…`, `T00000000`), or an unquoted
  all-letter value after `password=` / `token:`. Outputs may contain these (tutorials quote
  them); redaction still masks them, since masking too much in a log costs nothing.
- NONE: a placeholder or a reference, not a value: `sk-...`, `<your key>`, `$API_KEY`,
  `${DB_PASSWORD}`, `****`, `os.environ["X"]`, `getpass()`, `user:password@`. Left alone.

Where detect-secrets (pinned in pyproject.toml: its regexes are part of what a verdict
means, so a new version is a new RULES_VERSION) has a plugin whose regex fits, its regex is
used as is, read from the plugin class at import: AWS key ids and quoted AWS secrets, Azure
storage keys, GitHub, GitLab, Slack tokens and webhooks (without the case-insensitive flag:
real ones are lower case, and the flag slows the scan), Stripe, SendGrid, PyPI, Square and
the private-key headers; its JWT validity check too. Its OpenAI and npm regexes can
backtrack quadratically on long runs and its basic-auth regex misses passwords with raw
reserved characters (`p@ss!`), so those formats are ours, as are the bare AWS secret (40
characters within 240 after "aws", "secret" or a key id), Hugging Face, `sk-` keys, Google,
bearer and basic credentials, command-line flags (`--password x`, `-p'x'`) and password,
key and token assignments. Its Discord, Telegram, Twilio and Mailchimp regexes are left
out: no leading literal, so each would cost a slow scan of every output.

Cost: every regex starts with a literal (CPython skips ahead to it) or is tried only at the
positions of anchor words found with str.find; repeats are bounded and unambiguous, so a
scan is linear. One format tries at most MAX_ANCHORS anchor positions and judges at most
MAX_CANDIDATES matches (each distinct match once) in one text: a megabyte of "key: key: "
costs a bounded scan; a keyword credential after 50,000 occurrences of its keyword is not
seen (prefixed formats such as sk-, ghp_ or AKIA are always scanned whole).

Pure and deterministic (no I/O, no clock, no environment): it runs inside the workflow.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import itertools
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum

from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector

__all__ = ["FORMATS", "Finding", "Leak", "SecretFormat", "find_secrets", "first_secret", "mask"]


class Leak(IntEnum):
    NONE = 0
    EXAMPLE = 1
    REAL = 2


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int  # of the credential itself, not of a `password=` before it
    end: int
    leak: Leak


# ---------------------------------------------------------------- judging a value

# Documented sample credentials: real formats, published on purpose.
_DOCUMENTED = frozenset(
    {
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",  # jwt.io's signature
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
    }
)
_PLACEHOLDER_WORDS = re.compile(
    r"your|example|placeholder|changeme|change_me|redacted|dummy|sample|insert|replace|"
    r"x{4}|\*{3}|•{3}|\.{3}|…|todo|fixme",
    re.I,
)
_DUMMY_RUNS = ("abcdefgh", "12345678", "01234567", "qwertyui")
# Values that name a thing rather than being one: code, templates, types.
_REFERENCE = re.compile(
    r"""\A(?:
        [<{\[($%]                                  # <key> {{x}} [x] (x) $X %(x)s
      | (?:os\.)?(?:environ|getenv|env)\b           # os.environ["X"], env.X
      | [A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\Z          # settings.DB_PASSWORD
      | [A-Za-z_]\w*\(                             # getpass(
      | (?:str|string|none|null|true|false|bool|int|text|varchar|required|optional)\Z
    )""",
    re.I | re.X,
)
_COMMON_VALUES = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "secret",
        "user",
        "username",
        "admin",
        "root",
        "guest",
        "anonymous",
        "postgres",
        "mysql",
        "test",
        "token",
        "apikey",
        "api_key",
        "hidden",
        "omitted",
        "removed",
    }
)


_DIGIT = re.compile(r"\d")
_LETTER = re.compile(r"[^\W\d_]")


def _placeholder(value: str) -> bool:
    """`sk-...`, `<your key>`, `$API_KEY`, `****`, `xxxx`: a stand-in, not a value."""
    core = value.strip("'\"`")
    return (
        not core
        or bool(_REFERENCE.match(core))
        or bool(_PLACEHOLDER_WORDS.search(core))
        or core.casefold() in _COMMON_VALUES
    )


def _dummy(value: str) -> bool:
    """Low-diversity or sequential fills (T00000000, XXXX…, abcdefgh…): not a random key."""
    distinct = len(set(value))
    folded = value.casefold()
    return (
        distinct <= 3
        or (len(value) >= 16 and distinct <= 6)
        or any(run in folded for run in _DUMMY_RUNS)
    )


def _documented(value: str) -> bool:
    """AWS's EXAMPLE keys and the other published samples (checked before placeholders, so
    a log still masks them)."""
    return "EXAMPLE" in value or any(d in value for d in _DOCUMENTED)


def _example(value: str) -> bool:
    return _documented(value) or _dummy(value)


def _classes(value: str) -> int:
    return sum(
        (
            any(c.islower() for c in value),
            any(c.isupper() for c in value),
            any(c.isdigit() for c in value),
        )
    )


def _judge_value(value: str, *, strict: bool = True) -> Leak:
    """A credential-shaped value: NONE for a stand-in, EXAMPLE for a sample, else REAL.

    `strict` (values with no distinctive prefix) also wants a digit and a letter: an
    all-letter `token: patience` is prose; a redactor still masks it (EXAMPLE)."""
    stand_in = _stand_in(value)
    if stand_in is not None:
        return stand_in
    return _strictly(value) if strict else Leak.REAL


def _stand_in(value: str) -> Leak | None:
    """NONE for a placeholder, EXAMPLE for a documented or sample value, else None."""
    if _documented(value):
        return Leak.EXAMPLE
    if _placeholder(value):
        return Leak.NONE
    if _example(value):
        return Leak.EXAMPLE
    return None


def _strictly(value: str) -> Leak:
    """A value with no distinctive prefix counts only with a digit and a letter."""
    return Leak.REAL if _DIGIT.search(value) and _LETTER.search(value) else Leak.EXAMPLE


def _value_of(group: int | str) -> Callable[[re.Match[str]], Leak]:
    def judge(m: re.Match[str]) -> Leak:
        return _judge_value(m.group(group), strict=False)

    return judge


def _prefixed(m: re.Match[str]) -> Leak:
    """A value with a distinctive prefix (ghp_, AKIA, xoxb-): the prefix already says key."""
    return _judge_value(m.group(0), strict=False)


# ---------------------------------------------------------------- judges with context


def _aws_secret(m: re.Match[str]) -> Leak:
    # 40 base64 characters are everywhere (hashes, ids): only near "aws"/"secret"/a key id
    # (the anchors), with upper and lower case and a digit; hex (a git SHA) never has both.
    value = m.group("secret")
    if m.start() and m.string[m.start() - 1] in _B64_CHARS:
        return Leak.NONE  # the end of a longer run
    if _classes(value) < 3:
        return Leak.NONE
    return _judge_value(value)


def _jwt(m: re.Match[str]) -> Leak:
    token = m.group(0)
    if not JwtTokenDetector.is_formally_valid(token):
        return Leak.NONE
    return Leak.EXAMPLE if token.rsplit(".", 1)[-1] in _DOCUMENTED else Leak.REAL


def _basic_header(m: re.Match[str]) -> Leak:
    # `Basic <base64 of user:password>`; "Basic authentication" is prose.
    raw = m.group("secret")
    try:
        decoded = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return Leak.NONE
    user, sep, password = decoded.partition(":")
    if not sep or not password.isprintable():
        return Leak.NONE
    return _url_password(user, password)


def _url_credentials(m: re.Match[str]) -> Leak:
    return _url_password(m.group("user"), m.group("secret"))


def _url_password(user: str, password: str) -> Leak:
    # user:password@, postgres:postgres@, anonymous:anonymous@: documentation, not a leak.
    if _placeholder(password) or password == user or len(password) < 4:
        return Leak.NONE
    return Leak.EXAMPLE if _dummy(password) else Leak.REAL


def _assignment(quoted_counts: bool) -> Callable[[re.Match[str]], Leak]:
    """`password: "x"`, `api_key=x`. Unquoted, a value must look like a credential (a digit
    and a letter), or it is prose ("secret: patience"); quoted, a password counts as is."""

    def judge(m: re.Match[str]) -> Leak:
        value = m.group("secret")
        stand_in = _stand_in(value)
        if stand_in is not None:
            return stand_in
        if value.isdigit():
            return Leak.NONE  # token: 4096
        if quoted_counts and m.group("q"):
            return Leak.REAL
        return _strictly(value)

    return judge


def _random_value(m: re.Match[str]) -> Leak:
    """A value in prose counts only when it looks random: upper and lower case and a digit,
    or a digit and a symbol ("password reset link" and "key is simple" are prose)."""
    value = m.group("secret").rstrip(".")
    symbols = any(not c.isalnum() for c in value)
    if _classes(value) < 3 and not (symbols and any(c.isdigit() for c in value)):
        return Leak.NONE
    return _judge_value(value)


_KEY_PREFIX = re.compile(r"(?:api|secret|private|access|encryption|signing|master)[_-]?\Z", re.I)


def _key_assignment(m: re.Match[str]) -> Leak:
    # The anchor "key" counts only as api_key, apiKey, SECRET_KEY, x-api-key...: "monkey: x" no.
    if m.group("word").casefold() == "key" and not _KEY_PREFIX.search(
        m.string, max(0, m.start() - 12), m.start()
    ):
        return Leak.NONE
    return _assignment(quoted_counts=False)(m)


def _private_key(m: re.Match[str]) -> Leak:
    # A header alone is documentation ("files begin with -----BEGIN PRIVATE KEY-----");
    # a key needs a body: base64 or PEM headers, not "..." or "<your key>" or the END line.
    rest = m.string[m.end() : m.end() + 80].lstrip("- \t\r\n")
    first = rest.split("\n", 1)[0]
    if _placeholder(first) or not _KEY_BODY.match(rest):
        return Leak.NONE
    return Leak.REAL


_KEY_BODY = re.compile(r"[A-Za-z0-9+/=]{4}|Proc-Type:|Comment:|Encryption:|:\s*ssh-")


def _private_key_end(m: re.Match[str]) -> int:
    end = m.string.find("PRIVATE KEY", m.end(), m.end() + 65536)
    if end < 0:
        return len(m.string)  # no END line: mask the rest, it is all key material
    close = m.string.find("-----", end, end + 40)
    return close + 5 if close >= 0 else end + len("PRIVATE KEY")


# ---------------------------------------------------------------- formats and scanning

# Bounds on one format's work in one text, so a pathological output ("key: " a million
# times) costs a bounded scan: anchor positions tried, and matches judged.
MAX_ANCHORS = 50_000
MAX_CANDIDATES = 10_000
_WORD = frozenset(string.ascii_letters + string.digits + "_")
_LETTERS = frozenset(string.ascii_letters)


@dataclass(frozen=True)
class SecretFormat:
    """One credential format. Scanning stays linear and cheap on megabytes of text: a regex
    that starts with a literal is searched as is (CPython skips ahead to the literal);
    others are tried only where one of `anchors` occurs (found with str.find), and only
    when one of `needs` occurs at all."""

    kind: str  # what a verdict says, "an AWS access key ID"; never the value
    pattern: re.Pattern[str]
    judge: Callable[[re.Match[str]], Leak]
    group: int | str = 0  # the credential inside the match: what is located and masked
    needs: tuple[str, ...] = ()  # literals every match contains
    anchors: tuple[str, ...] = ()  # literals a match starts at
    window: int = 0  # with anchors: search this far after one instead of matching at it
    not_after: frozenset[str] = frozenset()  # characters that may not precede a match
    extend: Callable[[re.Match[str]], int] | None = None  # where masking ends, if further

    def scan(self, text: str, anchors: _Anchors | None = None) -> Iterator[Finding]:
        """Findings in text, in order; `anchors` shares anchor positions between formats.

        At most MAX_CANDIDATES matches are judged, and a repeated match is judged once: a
        megabyte of "password=password=..." costs a bounded scan, not a judge per copy."""
        if self.needs and not any(n in text for n in self.needs):
            return
        judged: dict[str, Leak] = {}
        matches = itertools.islice(self._matches(text, anchors or _Anchors(text)), MAX_CANDIDATES)
        for m in matches:
            if self.not_after and m.start() and text[m.start() - 1] in self.not_after:
                if not self._camel_case(text, m.start()):
                    continue
            # Judges may look a little before (api_key vs monkey) and after (a key's body).
            start, end = m.span()
            seen = f"{text[max(0, start - 12) : start]}\0{m.group(0)}\0{text[end : end + 80]}"
            leak = judged.get(seen)
            if leak is None:
                leak = judged[seen] = self.judge(m)
            if leak is not Leak.NONE:
                start, end = m.span(self.group)
                if self.extend is not None:
                    end = max(end, self.extend(m))
                yield Finding(self.kind, start, end, leak)

    def _matches(self, text: str, anchors: _Anchors) -> Iterator[re.Match[str]]:
        if not self.anchors:
            yield from self.pattern.finditer(text)
            return
        last = -1
        for pos in itertools.islice(anchors.positions(self.anchors), MAX_ANCHORS):
            if self.window:
                if pos < last:
                    continue  # this stretch was searched from an earlier anchor
                m = self.pattern.search(text, pos, min(len(text), pos + self.window))
                last = pos + self.window
            else:
                m = self.pattern.match(text, pos)
            if m is not None:
                yield m

    def _camel_case(self, text: str, start: int) -> bool:
        # userPassword (camelCase) and PGPASSWORD (an environment variable) count too.
        if self.not_after is not _LETTERS or not text[start].isupper():
            return False
        return text[start - 1].islower() or text[start : start + 3].isupper()


class _Anchors:
    """Where anchor literals occur in one text, found lazily (a format stops reading after
    MAX_CANDIDATES), with absent anchors remembered across formats. Case variants of a
    word (key, Key, KEY) are searched in one lower-cased copy when the text is ASCII
    (bytes, so lower-casing is cheap and positions stay the same)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.ascii = text.isascii()
        self.absent: set[str] = set()
        self.lowered: bytes | None = None

    def positions(self, anchors: tuple[str, ...]) -> Iterator[int]:
        """Every position where one of the literals starts, in order."""
        return heapq.merge(*(self._positions(a) for a in anchors if a not in self.absent))

    def _positions(self, anchor: str) -> Iterator[int]:
        text, lower = self.text, anchor.lower()
        if lower != anchor and self.ascii:
            if self.lowered is None:
                self.lowered = text.encode("ascii").lower()
            hay: str | bytes = self.lowered
            needle: str | bytes = lower.encode("ascii")
        else:
            hay, needle = text, anchor
        pos = hay.find(needle)  # type: ignore[arg-type]
        if pos < 0:
            self.absent.add(anchor)
        for _ in range(MAX_ANCHORS):  # other spellings count too: KEY is no key
            if pos < 0:
                return
            if hay is text or text.startswith(anchor, pos):
                yield pos
            pos = hay.find(needle, pos + 1)  # type: ignore[arg-type]


def _ds(pattern: re.Pattern[str], flags: int | None = None) -> re.Pattern[str]:
    """A detect-secrets regex, verbatim. Flags: its own, or (for Slack) none, since its
    case-insensitive flag would slow the scan and real tokens and webhooks are lower case."""
    return re.compile(pattern.pattern, pattern.flags & re.I if flags is None else flags)


def _prefixed_ds(kind: str, patterns: object, **kw: object) -> list[SecretFormat]:
    return [
        SecretFormat(kind, _ds(p), _prefixed, not_after=_WORD, **kw)  # type: ignore[arg-type]
        for p in patterns  # type: ignore[attr-defined]
    ]


_B64 = "A-Za-z0-9+/"
_B64_CHARS = frozenset(string.ascii_letters + string.digits + "+/=")
_AWS_ID = _ds(AWSKeyDetector.denylist[0])
_VALUE = r"[\"']?\s{0,4}[:=]\s{0,4}(?P<q>[\"']?)(?P<secret>[^\s\"',;}]{%d,512})"

FORMATS: tuple[SecretFormat, ...] = (
    SecretFormat(
        "a private key block",
        re.compile("|".join(p.pattern for p in PrivateKeyDetector.denylist)),
        _private_key,
        needs=("PRIVATE KEY", "PuTTY-User-Key-File"),
        extend=_private_key_end,
    ),
    SecretFormat("an AWS access key ID", _AWS_ID, _prefixed, not_after=_WORD),
    SecretFormat(
        "an AWS secret access key",
        _ds(AWSKeyDetector.denylist[1]),
        _value_of(1),
        1,
        anchors=("aws", "AWS", "Aws"),
    ),
    SecretFormat(
        "an AWS secret access key",
        re.compile(rf"(?P<secret>[{_B64}]{{40}})(?![{_B64}=])"),
        _aws_secret,
        "secret",
        anchors=("aws", "AWS", "Aws", "secret", "Secret", "SECRET", "AKIA", "ASIA"),
        window=240,
    ),
    SecretFormat(
        "an Azure storage account key", _ds(AzureStorageKeyDetector.denylist[0]), _prefixed
    ),
    *_prefixed_ds("a GitHub token", GitHubTokenDetector.denylist),
    SecretFormat(
        "a GitHub token", re.compile(r"github_pat_[A-Za-z0-9_]{22,255}"), _prefixed, not_after=_WORD
    ),
    *_prefixed_ds("a GitLab token", GitLabTokenDetector.denylist),
    SecretFormat("a Slack token", _ds(SlackDetector.denylist[0], 0), _prefixed, not_after=_WORD),
    SecretFormat(
        "a Slack token", re.compile(r"xapp-\d-[A-Za-z0-9-]{20,200}"), _prefixed, not_after=_WORD
    ),
    SecretFormat("a Slack webhook URL", _ds(SlackDetector.denylist[1], re.X), _prefixed),
    SecretFormat(
        "a Stripe live key",
        _ds(StripeDetector.denylist[0]),
        _prefixed,
        needs=("k_live_",),
        not_after=_WORD,
    ),
    *_prefixed_ds("a SendGrid API key", SendGridDetector.denylist),
    *_prefixed_ds("a PyPI token", PypiTokenDetector.denylist),
    *_prefixed_ds("a Square token", SquareOAuthDetector.denylist),
    SecretFormat(
        "an npm token",
        re.compile(r"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])"),
        _prefixed,
        not_after=_WORD,
    ),
    SecretFormat(
        "a Hugging Face token",
        re.compile(r"hf_[A-Za-z0-9]{30,64}(?![A-Za-z0-9])"),
        _prefixed,
        not_after=_WORD,
    ),
    SecretFormat(
        "a Google API key", re.compile(r"AIza[0-9A-Za-z_-]{35}"), _prefixed, not_after=_WORD
    ),
    SecretFormat(
        # OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-), OpenRouter (sk-or-v1-)...
        "an sk- API key",
        re.compile(r"sk-(?P<secret>[A-Za-z0-9_-]{20,300})"),
        lambda m: _judge_value(m.group("secret")),
        not_after=_WORD | {"-"},
    ),
    SecretFormat(
        "a JSON Web Token",
        re.compile(r"eyJ[A-Za-z0-9_-]{8,4096}\.eyJ[A-Za-z0-9_-]{4,8192}\.[A-Za-z0-9_-]{0,1024}"),
        _jwt,
        not_after=_WORD | {"-"},
    ),
    SecretFormat(
        "a password in a URL",
        re.compile(r"://(?P<user>[^\s:/?#@]{0,128}):(?P<secret>[^\s/?#@]{1,128})@(?=[\w\[])"),
        _url_credentials,
        "secret",
    ),
    SecretFormat(
        "HTTP basic credentials",
        re.compile(r"(?:Basic|BASIC)\s+(?P<secret>[A-Za-z0-9+/]{8,512}={0,2})(?![A-Za-z0-9+/=])"),
        _basic_header,
        "secret",
        anchors=("Basic", "BASIC"),
        not_after=_WORD,
    ),
    SecretFormat(
        "a bearer token",
        re.compile(r"(?i:bearer)\s+(?P<secret>[A-Za-z0-9._~+/-]{16,4096}=*)"),
        lambda m: _judge_value(m.group("secret")),
        "secret",
        anchors=("Bearer", "bearer", "BEARER"),
        not_after=_WORD,
    ),
    SecretFormat(
        "a password",
        # Letters may not precede (DB_PASSWORD= counts, "mypassword:" does not), except in
        # camelCase (userPassword:).
        re.compile(r"(?i:pass(?:word|wd|phrase)|pwd)" + _VALUE % 6),
        _assignment(quoted_counts=True),
        "secret",
        anchors=("pass", "Pass", "PASS", "pwd", "Pwd", "PWD"),
        not_after=_LETTERS,
    ),
    SecretFormat(
        "a credential on a command line",
        re.compile(
            r"--(?:password|passwd|pass|token|api-key|apikey|secret|client-secret|account-key"
            r"|access-key|secret-key|auth-token)(?:=|\s+)(?P<q>[\"']?)(?P<secret>[^\s\"']{6,512})"
        ),
        _assignment(quoted_counts=True),
        "secret",
    ),
    SecretFormat(
        # mysql -p'secret', redis-cli -a "secret": quoted only (-p 5432 is a port).
        "a password on a command line",
        re.compile(r" -[ap] ?(?P<q>[\"'])(?P<secret>[^\s\"']{6,256})[\"']"),
        _assignment(quoted_counts=True),
        "secret",
        anchors=(" -a", " -p"),
    ),
    SecretFormat(
        # "password Xr9!vQ2k", "the key is 9fK2...": prose; the value must look random.
        "a password",
        re.compile(r"(?i:pass(?:word|wd|phrase))\s+(?:is\s+)?(?P<q>)(?P<secret>[^\s\"',;}]{6,64})"),
        _random_value,
        "secret",
        anchors=("pass", "Pass", "PASS"),
        not_after=_LETTERS,
    ),
    SecretFormat(
        "an API key or token",
        re.compile(r"(?i:key|token|secret)\s+is\s+(?P<q>)(?P<secret>[A-Za-z0-9+/=_.-]{16,512})"),
        _random_value,
        "secret",
        anchors=("key is", "token is", "secret is", "Key is", "Token is", "Secret is"),
        not_after=_LETTERS,
    ),
    SecretFormat(
        "an API key or token",
        re.compile(r"(?P<word>(?i:key|token|secret))" + _VALUE % 8),
        _key_assignment,
        "secret",
        anchors=("key", "Key", "KEY", "token", "Token", "TOKEN", "secret", "Secret", "SECRET"),
    ),
)


def find_secrets(text: str, at_least: Leak = Leak.REAL) -> Iterator[Finding]:
    """Every credential in text at or above `at_least`, format by format."""
    anchors = _Anchors(text)
    for fmt in FORMATS:
        for found in fmt.scan(text, anchors):
            if found.leak >= at_least:
                yield found


def first_secret(text: str) -> Finding | None:
    """The earliest REAL credential in text; on a tie the more specific format (listed
    first) names it. Each format stops scanning at its first real one."""
    best: Finding | None = None
    anchors = _Anchors(text)
    for fmt in FORMATS:
        found = next((f for f in fmt.scan(text, anchors) if f.leak is Leak.REAL), None)
        if found is not None and (best is None or found.start < best.start):
            best = found
    return best


def mask(text: str, replacement: str) -> str:
    """text with every credential (REAL or EXAMPLE) replaced; prefixes such as `Bearer `
    and `password=` are kept, so a log still says what was there."""
    spans = sorted((f.start, f.end) for f in find_secrets(text, Leak.EXAMPLE))
    if not spans:
        return text
    out: list[str] = []
    pos = 0
    for start, end in spans:
        if end <= pos:
            continue  # inside a span already masked
        out.append(text[pos : max(pos, start)])
        out.append(replacement)
        pos = end
    out.append(text[pos:])
    return "".join(out)
