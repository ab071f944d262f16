"""Write pyauthz(8) as roff (called by build.sh): the NAME, DESCRIPTION, FILES and the other
hand-written sections below, and COMMANDS generated from the click command tree of the
tree being packaged, so that every command and option in the page is the one the package
runs.

Usage: manpage.py LIBDIR VERSION OUT   (LIBDIR: the staged /usr/lib/pyauthz/lib)
"""

from __future__ import annotations

import datetime
import os
import re
import sys

import click


def esc(text: str) -> str:
    """Escape running text for roff: backslashes, and a control character at a line start."""
    text = text.replace("\\", "\\e")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line
                     for line in text.split("\n"))


def opt(text: str) -> str:
    """An option name or usage string: escaped, minus signs as \\- (copy-pasteable)."""
    return esc(text).replace("-", "\\-")


def paragraphs(text: str) -> list[str]:
    out = []
    for block in re.split(r"\n\s*\n", (text or "").strip()):
        block = block.strip("\n")
        if not block:
            continue
        if block.startswith("\b"):  # click's "do not rewrap" marker
            out.append(".nf\n" + esc(block[1:].strip("\n")) + "\n.fi")
        else:
            out.append(esc(" ".join(line.strip() for line in block.splitlines())))
    return out


def command_section(cmd: click.Command, ctx: click.Context, lines: list[str]) -> None:
    path = ctx.command_path
    if isinstance(cmd, click.Group):
        if ctx.parent is not None and cmd.help:
            lines += [f".SS {opt(path)}", *paragraphs(cmd.help)]
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            command_section(sub, click.Context(sub, info_name=name, parent=ctx), lines)
        return
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    lines += [f".SS {opt(path)}", f".B {opt(path)}", opt(usage), ".PP"]
    for para in paragraphs(cmd.help or cmd.short_help or ""):
        lines += [para, ".PP"]
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        lines += [".TP", f".B {opt(names)}", esc(" ".join(help_text.split())) or "\\&"]
    if lines[-1] == ".PP":
        lines.pop()


HEAD = r""".TH PYAUTHZ 8 "{date}" "pyauthz {version}" "System Administration"
.SH NAME
pyauthz \- Docker Engine authorization plugin with Casbin policies and image signature checks
.SH SYNOPSIS
.B pyauthz serve
.RB [ \-\-socket
.IR PATH ]
.RB [ \-\-policy
.IR DIR ]
.RI [ OPTIONS ]
.br
.B pyauthz reload
.RB [ \-\-socket
.IR PATH ]
.br
.B pyauthz health
.RB [ \-\-socket
.IR PATH ]
.br
.B pyauthz policy
.RI { lint | test | explain | replay }
.RI [ OPTIONS ]
.SH DESCRIPTION
.B pyauthz
answers dockerd's authorization requests.
Started as
.BR "dockerd \-\-authorization\-plugin=pyauthz" ,
dockerd asks it, for every API call, whether to allow it.
pyauthz decodes each request the way dockerd will act on it, judges what it asks for against
the policy in
.I /etc/pyauthz/policies
(Casbin rules in
.IR rules.yaml ,
image signature trust in
.IR trust.yaml )
and a built-in floor that no policy can open, and logs every decision as one JSON line.
A request it cannot read exactly as dockerd would, and any error inside the plugin, is denied:
it fails closed.
.PP
As shipped, the policy denies privileged containers, host namespaces, host paths outside
.IR /srv ,
and every image that is not signed by a trusted key; and
.I trust.yaml
trusts no key, so every image pull and run is denied until a key is added.
.PP
The Debian package runs it under systemd:
.I pyauthz.socket
listens on
.I /run/docker/plugins/pyauthz.sock
before
.I docker.service
starts, and starts
.I pyauthz.service
on the first connection.
dockerd refuses to start while a configured authorization plugin does not answer.
.SH COMMANDS
"""

TAIL = r""".SH FILES
.TP
.I /etc/pyauthz/policies/
The policy: \fImodel.conf\fR, \fIrules.yaml\fR, \fItrust.yaml\fR and the policy's own test
cases in \fItests/\fR (configuration files of the package: local changes are kept on upgrade).
\fBpyauthz serve\fR uses it when \fB\-\-policy\fR is not given and it exists;
\fIpyauthz.service\fR lints it before every start and \fBsystemctl reload pyauthz\fR
reloads it safely.
.TP
.I /run/docker/plugins/pyauthz.sock
The plugin socket (mode 0600) where dockerd finds the plugin named \fBpyauthz\fR.
.TP
.I /run/pyauthz/
The running plugin's state and pid files, read by \fBpyauthz reload\fR.
.TP
.IR /lib/systemd/system/pyauthz.socket ", " /lib/systemd/system/pyauthz.service
The systemd units.
.TP
.I /var/log/pyauthz/
Where the service may write the decision log (\fB\-\-log\-file\fR); by default it goes
to the journal: \fBjournalctl \-u pyauthz\fR.
.TP
.I /usr/lib/pyauthz/lib/
pyauthz's Python code and the libraries it carries.
.TP
.I /etc/docker/daemon.json
\fB{ "authorization\-plugins": ["pyauthz"] }\fR makes dockerd use the plugin.
.SH SIGNALS
.TP
.B SIGHUP
Reload the policy: it is loaded and validated before any worker is replaced; a policy that
does not load leaves the running one deciding (\fBpyauthz reload\fR reports which).
.TP
.B SIGTERM
Stop cleanly.
.SH EXIT STATUS
\fBpyauthz reload\fR: 0 the new revision decides, 1 the policy does not load or the reload
failed, 2 the plugin did not answer.
\fBpyauthz health\fR: 0 the plugin makes and logs decisions, 1 it does not.
Other commands exit 0 on success and non\-zero on an error.
.SH SEE ALSO
.BR dockerd (8),
.BR systemctl (1),
.BR systemd.socket (5),
.BR journalctl (1);
.I /usr/share/doc/pyauthz/
"""


def main() -> None:
    lib, version, out = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.path.insert(0, lib)
    from authz.cli import main as cli

    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None
    date = (datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc) if epoch
            else datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%d")
    lines: list[str] = []
    command_section(cli, click.Context(cli, info_name="pyauthz"), lines)
    text = HEAD.replace("{date}", date).replace("{version}", esc(version)) + "\n".join(lines) + "\n" + TAIL
    with open(out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
