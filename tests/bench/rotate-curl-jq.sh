#!/bin/bash
# The baseline of `make bench`: the token rotation an operator would script from the
# documentation, with curl and jq, one token after the other. For each token file:
#
#   1. look the old token up           POST   /api/v1/tokens/lookup   {"token": OLD}
#   2. create a new one, same name and scopes
#                                      POST   /api/v1/tokens          {"name","scopes","expiresIn"}
#   3. look the new token up for its id (and to be sure it works)
#   4. write it to the file atomically: a temporary file in the same directory, synced,
#      renamed over the file, directory synced
#   5. revoke the old token            PUT    /api/v1/tokens/ID       {"revoked": true}
#   6. delete the old token            DELETE /api/v1/tokens/ID
#
# Usage: rotate-curl-jq.sh URL MANAGEMENT_TOKEN_FILE TOKEN_FILE...
#        rotate-curl-jq.sh URL MANAGEMENT_TOKEN_FILE -l LIST   (one token file per line)
#
# Written lean, as a careful operator would: 5 curl, 4 jq and 4 small coreutils
# processes per token, nothing slowed down on purpose and nothing left out. The create
# body is built with jq (a token name may hold quotes); a token (dt0c01.[A-Z0-9]+.[A-Z0-9]+)
# needs no quoting. Every answer is parsed with jq, every curl fails on an HTTP error (-f),
# the script stops at the first failure, and the management token reaches curl through a
# header file (-H @FILE), never its command line.
set -euo pipefail

[ $# -ge 3 ] || { echo "usage: $0 URL MANAGEMENT_TOKEN_FILE TOKEN_FILE... | -l LIST" >&2; exit 64; }
url=${1%/}
mgmt_file=$2
shift 2
if [ "$1" = -l ]; then
	mapfile -t files <"$2"
else
	files=("$@")
fi

api=$url/api/v1/tokens
umask 077
hdr=$(mktemp)
trap 'rm -f "$hdr"' EXIT
printf 'Authorization: Api-Token %s\nContent-Type: application/json\n' "$(<"$mgmt_file")" >"$hdr"

call() { # METHOD PATH [BODY]
	if [ $# -ge 3 ]; then
		curl -fsS -X "$1" -H @"$hdr" --data-binary "$3" "$api$2"
	else
		curl -fsS -X "$1" -H @"$hdr" "$api$2"
	fi
}

for file in "${files[@]}"; do
	old=$(<"$file")

	# 1. the old token: id, name, scopes (one jq for the three)
	info=$(call POST /lookup "{\"token\": \"$old\"}")
	{ read -r old_id; read -r name; read -r scopes; } <<<"$(jq -r '.id, .name, (.scopes | tojson)' <<<"$info")"

	# 2. the new token, with the same name and scopes (jq quotes the name)
	new=$(call POST "" "$(jq -cn --arg n "$name" --argjson s "$scopes" \
		'{name: $n, scopes: $s, expiresIn: {value: 60, unit: "DAYS"}}')" | jq -r .token)

	# 3. its id, and proof that it works
	new_id=$(call POST /lookup "{\"token\": \"$new\"}" | jq -r .id)

	# 4. into the file, atomically and durably
	dir=${file%/*}
	tmp=$(mktemp "$dir/.${file##*/}.XXXXXX")
	printf '%s\n' "$new" >"$tmp"
	sync "$tmp"
	mv -f "$tmp" "$file"
	sync "$dir"

	# 5. + 6. retire the old token
	call PUT "/$old_id" '{"revoked": true}'
	call DELETE "/$old_id"

	echo "$file: $old_id -> $new_id"
done
