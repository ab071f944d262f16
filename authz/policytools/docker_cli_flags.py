"""spf13/pflag's command-line parsing as the docker CLI (cobra) uses it.

Long flags ``--name value`` / ``--name=value``; bool flags take no separate value
(``--rm``, ``--rm=false``); short flags combine (``-dit``) and take a value attached
(``-p80:80``, ``-e=A=b``) or as the next argument, even one starting with ``-``; ``--``
ends the flags. With ``interspersed=False`` (run, create, exec) the first positional
argument ends the flags. A repeated scalar flag keeps its last value. An unknown flag is
a ``CliError`` naming it; so is a known flag this translation does not model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from authz.policytools.docker_cli_errors import CliError
from authz.policytools.docker_cli_go import parse_bool, parse_int

BOOL, STRING, LIST, INT, UINT16 = "bool", "string", "list", "int", "uint16"


@dataclass(frozen=True)
class Flag:
    name: str
    kind: str = STRING
    short: str = ""
    aliases: tuple[str, ...] = ()  # other long names for the same value (--net, --network)
    refused: str = ""  # non-empty: a known flag this translation refuses, and why


@dataclass
class Parsed:
    """The flags given (by canonical name) and the positional arguments."""

    values: dict[str, object] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    args: list[str] = field(default_factory=list)

    def get(self, name: str, default=None):
        return self.values.get(name, default)

    def list(self, name: str) -> list[str]:
        return list(self.values.get(name) or [])


class FlagSet:
    def __init__(self, command: str, flags: list[Flag], interspersed: bool = True):
        self.command = command
        self.interspersed = interspersed
        self.long: dict[str, Flag] = {}
        self.short: dict[str, Flag] = {}
        for flag in flags:
            for name in (flag.name, *flag.aliases):
                self.long[name] = flag
            if flag.short:
                self.short[flag.short] = flag

    def _set(self, parsed: Parsed, flag: Flag, shown: str, value: str) -> None:
        if flag.refused:
            raise CliError(f"docker {self.command}: flag {shown} is not modelled ({flag.refused})")
        parsed.changed.add(flag.name)
        if flag.kind == LIST:
            parsed.values.setdefault(flag.name, []).append(value)
        elif flag.kind == BOOL:
            parsed.values[flag.name] = parse_bool(shown, value)
        elif flag.kind == INT:
            parsed.values[flag.name] = parse_int(shown, value)
        elif flag.kind == UINT16:
            parsed.values[flag.name] = parse_int(shown, value, bits=16, unsigned=True)
        else:
            parsed.values[flag.name] = value

    def parse(self, argv: list[str]) -> Parsed:
        parsed = Parsed()
        i = 0
        while i < len(argv):
            arg = argv[i]
            i += 1
            if arg == "--":
                parsed.args.extend(argv[i:])
                break
            if not arg.startswith("-") or arg == "-":
                parsed.args.append(arg)
                if not self.interspersed:
                    parsed.args.extend(argv[i:])
                    break
                continue
            if arg.startswith("--"):
                name, has_value, value = arg[2:].partition("=")
                flag = self.long.get(name)
                if flag is None or not name or name.startswith("-"):
                    raise CliError(f"docker {self.command}: unknown flag: --{name}")
                if not has_value:
                    if flag.kind == BOOL:
                        value = "true"
                    elif i < len(argv):
                        value, i = argv[i], i + 1
                    else:
                        raise CliError(f"docker {self.command}: flag needs an argument: --{name}")
                self._set(parsed, flag, f"--{name}", value)
                continue
            shorts = arg[1:]
            while shorts:
                letter = shorts[0]
                flag = self.short.get(letter)
                if flag is None:
                    raise CliError(f"docker {self.command}: unknown shorthand flag: {letter!r} in {arg}")
                if len(shorts) > 2 and shorts[1] == "=":
                    value, shorts = shorts[2:], ""
                elif flag.kind == BOOL:
                    value, shorts = "true", shorts[1:]
                elif len(shorts) > 1:
                    value, shorts = shorts[1:], ""
                elif i < len(argv):
                    value, shorts, i = argv[i], "", i + 1
                else:
                    raise CliError(f"docker {self.command}: flag needs an argument: {letter!r} in -{letter}")
                self._set(parsed, flag, f"-{letter}", value)
        return parsed
