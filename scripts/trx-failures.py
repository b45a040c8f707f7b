#!/usr/bin/env python3
"""Prints each failed test of a .trx results file: its name, its message, the first lines of its
stack trace and the last lines of its output, so that the end of a CI log names what went wrong."""
import sys
import xml.etree.ElementTree as ET

NS = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}


def tail(text, lines):
    parts = (text or "").strip().splitlines()
    return parts[-lines:] if len(parts) > lines else parts


def main(path):
    root = ET.parse(path).getroot()
    for result in root.iterfind(".//t:UnitTestResult", NS):
        if result.get("outcome") != "Failed":
            continue
        print(f"FAILED {result.get('testName')} ({result.get('duration')})")
        output = result.find("t:Output", NS)
        if output is None:
            continue
        message = output.findtext("t:ErrorInfo/t:Message", default="", namespaces=NS)
        stack = output.findtext("t:ErrorInfo/t:StackTrace", default="", namespaces=NS)
        stdout = output.findtext("t:StdOut", default="", namespaces=NS)
        for line in (message or "").strip().splitlines()[:30]:
            print(f"  message: {line}")
        for line in (stack or "").strip().splitlines()[:12]:
            print(f"  at: {line.strip()}")
        for line in tail(stdout, 40):
            print(f"  output: {line}")
        print()


if __name__ == "__main__":
    main(sys.argv[1])
