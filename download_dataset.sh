#!/usr/bin/env bash
# Download MiniPlaces, verify it, and lay it out as the kit expects.
#
# Usage:  bash download_dataset.sh [DEST]        (DEST defaults to ../data)
#
# Result:
#   DEST/train.txt, DEST/val.txt   the official lists (md5-checked)
#   DEST/test.txt                  generated from the test images (no labels)
#   DEST/categories.txt            class names, when it can be fetched (optional)
#   DEST/images/{train,val,test}/  the images
#
# Steps: the lists come from the CSAILVision/miniplaces repository (curl) and are
# checked against known md5 sums; the image archive comes from Google Drive with
# gdown, falling back to curl from the MIT server.  The archive must pass
# `tar -tzf`; it may hold images/{train,val,test}, data/images/{train,val,test}
# or {train,val,test} at its top.  It is extracted into a temporary folder inside
# DEST, the image counts are checked, and only then is it moved to DEST/images,
# so DEST never holds a half-extracted dataset.  An interrupted curl download is
# resumed on the next run (an interrupted gdown one is redone).  A re-run with
# everything verified in place does nothing.  Any failure: one "error: ..." line
# on stderr and a non-zero exit.
#
# Environment overrides (for mirrors and tests):
#   MINIPLACES_GDRIVE_ID, MINIPLACES_ARCHIVE_URL, MINIPLACES_LISTS_URL,
#   MINIPLACES_TRAIN_MD5, MINIPLACES_VAL_MD5,
#   MINIPLACES_EXPECT_TRAIN, MINIPLACES_EXPECT_VAL, MINIPLACES_EXPECT_TEST,
#   MINIPLACES_KEEP_ARCHIVE=1 keeps DEST/.download/data.tar.gz after extraction.
set -Eeuo pipefail

GDRIVE_ID="${MINIPLACES_GDRIVE_ID:-16GYHdSWS3iMYwMPv5FpeDZN2rH7PR0F2}"
ARCHIVE_URL="${MINIPLACES_ARCHIVE_URL:-https://places.csail.mit.edu/miniplaces/data/data.tar.gz}"
LISTS_URL="${MINIPLACES_LISTS_URL:-https://raw.githubusercontent.com/CSAILVision/miniplaces/master/data}"
TRAIN_MD5="${MINIPLACES_TRAIN_MD5:-9ef0d988e43f4a3734f7735a6d99d430}"
VAL_MD5="${MINIPLACES_VAL_MD5:-eaee4c0605235fb0042368aa6d921db2}"
EXPECT_TRAIN="${MINIPLACES_EXPECT_TRAIN:-100000}"
EXPECT_VAL="${MINIPLACES_EXPECT_VAL:-10000}"
EXPECT_TEST="${MINIPLACES_EXPECT_TEST:-10000}"
KEEP_ARCHIVE="${MINIPLACES_KEEP_ARCHIVE:-0}"

die() { echo "error: $*" >&2; exit 1; }
info() { echo "download_dataset: $*"; }
trap 'rc=$?; echo "error: unexpected failure (exit $rc) at line $LINENO: $BASH_COMMAND" >&2; exit $rc' ERR

[ "$#" -le 1 ] || die "usage: bash download_dataset.sh [DEST]   (default DEST: ../data)"
DEST="${1:-../data}"
for var in EXPECT_TRAIN EXPECT_VAL EXPECT_TEST; do
    case "${!var}" in ''|*[!0-9]*) die "MINIPLACES_$var must be a non-negative integer, got '${!var}'";; esac
done
CHANGED=0

for tool in tar find wc mkdir mv rm; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required but not installed"
done
command -v curl >/dev/null 2>&1 || die "'curl' is required but not installed (apt-get install curl)"
if command -v md5sum >/dev/null 2>&1; then
    md5_of() { md5sum "$1" | cut -d' ' -f1; }
elif command -v md5 >/dev/null 2>&1; then
    md5_of() { md5 -q "$1"; }
else
    die "'md5sum' (or 'md5') is required but not installed"
fi

mkdir -p "$DEST" 2>/dev/null || die "cannot create destination folder '$DEST'"
DEST="$(cd "$DEST" && pwd)"
WORK="$DEST/.download"
EXTRACT=""
cleanup() { if [ -n "$EXTRACT" ]; then rm -rf "$EXTRACT"; fi; }
trap cleanup EXIT

count_jpgs() {  # count_jpgs DIR -> number of .jpg files below DIR (0 if absent)
    if [ -d "$1" ]; then find "$1" -type f -iname '*.jpg' | wc -l | tr -d ' '; else echo 0; fi
}

images_ok() {  # images_ok DIR: DIR/{train,val,test} hold the expected counts
    [ "$(count_jpgs "$1/train")" -eq "$EXPECT_TRAIN" ] &&
        [ "$(count_jpgs "$1/val")" -eq "$EXPECT_VAL" ] &&
        [ "$(count_jpgs "$1/test")" -eq "$EXPECT_TEST" ]
}

list_ok() {  # list_ok NAME MD5
    [ -f "$DEST/$1" ] && [ "$(md5_of "$DEST/$1")" = "$2" ]
}

fetch_list() {  # fetch_list NAME MD5
    local name="$1" want="$2" got
    if list_ok "$name" "$want"; then
        info "$name already in place (md5 ok)"
        return 0
    fi
    mkdir -p "$WORK"
    info "fetching $name"
    curl -fsSL --retry 3 -o "$WORK/$name.part" "$LISTS_URL/$name" ||
        die "could not download $LISTS_URL/$name (no network?)"
    got="$(md5_of "$WORK/$name.part")"
    if [ "$got" != "$want" ]; then
        rm -f "$WORK/$name.part"
        die "checksum mismatch for $name: expected md5 $want, got $got"
    fi
    mv -f "$WORK/$name.part" "$DEST/$name"
    CHANGED=1
}

archive_ok() { [ -s "$1" ] && tar -tzf "$1" >/dev/null 2>&1; }

download_archive() {  # leaves a verified archive at $WORK/data.tar.gz
    local archive="$WORK/data.tar.gz" rc
    mkdir -p "$WORK"
    if [ -f "$archive" ]; then
        if archive_ok "$archive"; then
            info "reusing downloaded archive $archive"
            return 0
        fi
        rm -f "$archive"
    fi
    if command -v gdown >/dev/null 2>&1; then
        info "downloading the image archive with gdown (Drive id $GDRIVE_ID)"
        rm -f "$WORK/gdown.part"
        if gdown -O "$WORK/gdown.part" "$GDRIVE_ID" && archive_ok "$WORK/gdown.part"; then
            mv -f "$WORK/gdown.part" "$archive"
            return 0
        fi
        rm -f "$WORK/gdown.part"
        info "gdown failed or gave a bad archive; falling back to $ARCHIVE_URL"
    else
        info "gdown not found (pip install gdown); downloading $ARCHIVE_URL with curl"
    fi
    rc=0
    curl -fL --retry 3 -C - -o "$WORK/curl.part" "$ARCHIVE_URL" || rc=$?
    if [ "$rc" -eq 33 ]; then  # server cannot resume: start over
        rm -f "$WORK/curl.part"
        rc=0
        curl -fL --retry 3 -o "$WORK/curl.part" "$ARCHIVE_URL" || rc=$?
    fi
    [ "$rc" -eq 0 ] || die "could not download the image archive (gdown and curl failed; curl exit $rc)"
    if ! archive_ok "$WORK/curl.part"; then
        rm -f "$WORK/curl.part"
        die "the downloaded image archive is corrupt (tar -tzf failed); removed it, re-run to try again"
    fi
    mv -f "$WORK/curl.part" "$archive"
}

extract_archive() {
    local archive="$WORK/data.tar.gz" src="" old
    EXTRACT="$(mktemp -d "$DEST/.extract.XXXXXX")"
    info "extracting $archive"
    tar -xzf "$archive" -C "$EXTRACT" || die "could not extract $archive (disk full or corrupt archive?)"
    for cand in "$EXTRACT/images" "$EXTRACT/data/images" "$EXTRACT"; do
        if [ -d "$cand/train" ] && [ -d "$cand/val" ]; then src="$cand"; break; fi
    done
    [ -n "$src" ] || die "unexpected archive layout: no images/{train,val} folder in $archive"
    local n_train n_val n_test
    n_train="$(count_jpgs "$src/train")"
    n_val="$(count_jpgs "$src/val")"
    n_test="$(count_jpgs "$src/test")"
    if [ "$n_train" -ne "$EXPECT_TRAIN" ] || [ "$n_val" -ne "$EXPECT_VAL" ] || [ "$n_test" -ne "$EXPECT_TEST" ]; then
        rm -f "$archive"
        die "wrong image counts in the archive: train $n_train/$EXPECT_TRAIN, val $n_val/$EXPECT_VAL, test $n_test/$EXPECT_TEST (archive removed; re-run to download again)"
    fi
    if [ "$src" = "$EXTRACT" ]; then  # bare {train,val,test}: gather them under images/
        mkdir "$EXTRACT/.images"
        for split in train val test; do
            if [ -d "$EXTRACT/$split" ]; then mv "$EXTRACT/$split" "$EXTRACT/.images/$split"; fi
        done
        src="$EXTRACT/.images"
    fi
    if [ -e "$DEST/images" ]; then
        old="$EXTRACT/.old-images"
        mv "$DEST/images" "$old"
    fi
    mv "$src" "$DEST/images"
    rm -rf "$EXTRACT"
    EXTRACT=""
    CHANGED=1
}

write_test_list() {  # DEST/test.txt: every test image, sorted, no labels
    local tmp="$DEST/.test.txt.part"
    if [ -d "$DEST/images/test" ]; then
        (cd "$DEST/images" && find test -type f -iname '*.jpg' | LC_ALL=C sort) >"$tmp"
    else
        : >"$tmp"
    fi
    mv -f "$tmp" "$DEST/test.txt"
    CHANGED=1
}

# ---------------------------------------------------------------------------- main
fetch_list train.txt "$TRAIN_MD5"
fetch_list val.txt "$VAL_MD5"

if images_ok "$DEST/images"; then
    info "images already in place and complete in $DEST/images"
else
    download_archive
    extract_archive
    if [ "$KEEP_ARCHIVE" != "1" ]; then rm -f "$WORK/data.tar.gz"; fi
fi

if [ ! -f "$DEST/test.txt" ] || [ "$(wc -l <"$DEST/test.txt" | tr -d ' ')" -ne "$EXPECT_TEST" ]; then
    write_test_list
fi
if [ ! -f "$DEST/categories.txt" ]; then
    if curl -fsSL --retry 2 -o "$DEST/.categories.txt.part" "$LISTS_URL/categories.txt"; then
        mv -f "$DEST/.categories.txt.part" "$DEST/categories.txt"
        CHANGED=1
    else
        rm -f "$DEST/.categories.txt.part"
        info "note: could not fetch categories.txt (optional: class names only)"
    fi
fi
rmdir "$WORK" 2>/dev/null || true
if [ "$CHANGED" -eq 0 ]; then
    info "MiniPlaces already in place in $DEST (lists and image counts verified); nothing to do"
else
    info "MiniPlaces is ready in $DEST (train $EXPECT_TRAIN, val $EXPECT_VAL, test $EXPECT_TEST images)"
fi
