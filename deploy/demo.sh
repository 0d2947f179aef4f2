#!/usr/bin/env bash
# A real transfer on the emulators: a small folder goes local -> S3 (moto) -> Azure (Azurite).
set -euo pipefail
cd "$(dirname "$0")/.."
demo="$PWD/.demo"
rm -rf "$demo"
python deploy/emulators.py start "$demo"
trap 'python deploy/emulators.py stop "$demo"' EXIT
export CLOUDMESH_CONFIG_DIR="$demo"

mkdir -p "$demo/local/data/photos/2024" "$demo/local/data/notes"
printf 'hello from cloudmesh-transfer\n' > "$demo/local/data/README.txt"
printf 'a note with spaces\n' > "$demo/local/data/notes/my notes.txt"
head -c 12000000 /dev/urandom > "$demo/local/data/photos/2024/big.raw"

set -x
cms transfer copy --source=local:data --target=awss3:data -r --id=demo-upload
cms transfer copy --source=awss3:data --target=azure:data -r --id=demo-s3-to-azure
cms transfer list --target=azure:data -r
cms transfer status
cms transfer status --id=demo-s3-to-azure --output=json
cms transfer statistic
