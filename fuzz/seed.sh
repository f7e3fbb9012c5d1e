#!/bin/sh
# Seeds fuzz/corpus/classify with the request targets of the identity corpus
# (tests/corpus/identity-requests.txt), one file each, \xHH escapes left as
# written. The corpus directory is libFuzzer's working set and is not committed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/corpus/classify"
mkdir -p "$out"
grep -v '^#' "$here/../tests/corpus/identity-requests.txt" \
    | sed -n 's/^[^ ]* \([^ ]*\).*/\1/p' \
    | sed 's#^[a-zA-Z]*://[^/]*##' \
    | awk -v out="$out" 'NF { f = sprintf("%s/seed-%04d", out, NR); printf "%s", $0 > f; close(f) }'
echo "$(ls "$out" | wc -l) inputs in $out"
