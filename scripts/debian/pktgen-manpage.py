#!/usr/bin/env python3
"""Writes vhost-netmap-pkt-gen(1) (roff) from the tool's own --help: the package's man page for
the traffic generator, whose options are netmap pkt-gen's. usage: pktgen-manpage.py BINARY VERSION"""
import datetime
import subprocess
import sys

binary, version = sys.argv[1], sys.argv[2]
run = subprocess.run([binary, "--help"], capture_output=True, text=True)
text = (run.stdout + run.stderr).replace("pkt-gen", "vhost-netmap-pkt-gen")
escaped = "\n".join(("\\&" + line if line.startswith((".", "'")) else line).replace("\\", "\\e") for line in text.rstrip().split("\n"))
print(f""".TH VHOST-NETMAP-PKT-GEN 1 {datetime.date.today().isoformat()} "vhost-netmap {version}" "User Commands"
.SH NAME
vhost-netmap-pkt-gen \\- packet generator and counter with netmap pkt-gen's options
.SH SYNOPSIS
.B vhost-netmap-pkt-gen
.B \\-i
.I IFACE
.RI [ OPTIONS ]
.SH DESCRIPTION
Sends (\\fB\\-f tx\\fR), receives and counts (\\fB\\-f rx\\fR), or measures round trips
(\\fB\\-f ping\\fR / \\fB\\-f pong\\fR) on a vhost-user socket (as a front-end of its own), a TAP,
a netmap port, or any interface through AF_PACKET, printing what netmap's pkt-gen prints.
.SH OPTIONS
.nf
{escaped}
.fi
.SH SEE ALSO
.BR vhost-netmap (1)
""")
