#!/usr/bin/env python3
"""Opens every function zip `sam package` uploaded (to moto's S3) and checks it: one file, `bootstrap`,
at the root, executable, an ELF built for the architecture template.yaml gives the function, and
position-independent (ELF type DYN: the whole executable is moved by ASLR). With --size-limit (the
deploy build; a --quick build's lightened profile says nothing of size) every bootstrap also weighs
at most MAX_BOOTSTRAP_BYTES unzipped.

Usage: sam-package-check.py [--size-limit] TEMPLATE PACKAGED_TEMPLATE   (AWS_ENDPOINT_URL: moto)
"""
import io
import os
import sys
import zipfile

import boto3
import yaml

ELF_MACHINE = {"x86_64": 62, "arm64": 183}  # EM_X86_64, EM_AARCH64
ET_DYN = 3  # a position-independent executable (or a shared object); ET_EXEC (2) is fixed-address
# The most a bootstrap may weigh, unzipped (docs/benchmarks.md, "What a function weighs").
MAX_BOOTSTRAP_BYTES = 8_500_000


class Loader(yaml.SafeLoader):
    pass


# CloudFormation's short-form tags (!Ref, !GetAtt, !Sub ...) are irrelevant here: keep their values.
Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def architecture(template, name):
    props = template["Resources"][name].get("Properties", {})
    arches = props.get("Architectures") or template.get("Globals", {}).get("Function", {}).get("Architectures")
    return (arches or ["x86_64"])[0]


def main():
    args = sys.argv[1:]
    size_limit = "--size-limit" in args
    args = [a for a in args if a != "--size-limit"]
    source = yaml.load(open(args[0]), Loader=Loader)
    packaged = yaml.load(open(args[1]), Loader=Loader)
    s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
    functions = [n for n, r in packaged["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
    failures = 0
    for name in sorted(functions):
        uri = packaged["Resources"][name]["Properties"]["CodeUri"]
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            entries = z.infolist()
            names = [e.filename for e in entries]
            problems = []
            if names != ["bootstrap"]:
                problems.append(f"entries {names[:10]}{' ...' if len(names) > 10 else ''} ({len(names)}), want only bootstrap")
            if "bootstrap" in names:
                info = z.getinfo("bootstrap")
                head = z.read("bootstrap")[:20]
                mode = info.external_attr >> 16
                arch = architecture(source, name)
                elf = head[:4] == b"\x7fELF"
                machine = int.from_bytes(head[18:20], "little") if elf else None
                elf_type = int.from_bytes(head[16:18], "little") if elf else None
                if machine != ELF_MACHINE[arch]:
                    problems.append(f"bootstrap is not an ELF for {arch} (e_machine {machine})")
                if elf_type != ET_DYN:
                    problems.append(f"bootstrap is not position-independent (e_type {elf_type}, want {ET_DYN}: DYN)")
                if size_limit and info.file_size > MAX_BOOTSTRAP_BYTES:
                    problems.append(f"bootstrap weighs {info.file_size:,} bytes, over {MAX_BOOTSTRAP_BYTES:,}")
                if not mode & 0o111:
                    problems.append(f"bootstrap is not executable (mode {oct(mode)})")
                size = info.file_size
            else:
                size, arch = 0, architecture(source, name)
        if problems:
            failures += 1
            print(f"{name}: FAILED: {'; '.join(problems)}")
        else:
            print(f"{name}: ok: {uri} holds bootstrap only, PIE ELF {arch}, {size:,} bytes unzipped{' (<= ' + format(MAX_BOOTSTRAP_BYTES, ',') + ')' if size_limit else ''}, {len(data) / 1e6:.1f} MB zipped")
    if not functions:
        print("no functions in the packaged template")
        failures += 1
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
