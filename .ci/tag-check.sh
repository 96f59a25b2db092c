#!/usr/bin/env bash
# Does a release tag name the package version (v<version> of pyproject.toml)? (`make tag-check`)
#   .ci/tag-check.sh TAG   the release workflow: TAG is the pushed tag ($GITHUB_REF_NAME); empty fails.
#   .ci/tag-check.sh       .ci/run: every v* tag on HEAD (git tag --points-at HEAD), so a tagged commit
#                          checked by CI here fails when its tag and version disagree; an untagged HEAD has no
#                          release tag, and says so.
set -euo pipefail
version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n1)
if [ -z "$version" ]; then
    echo "tag-check: pyproject.toml has no version" >&2
    exit 1
fi
if [ $# -gt 0 ]; then
    tags=("$1")
else
    mapfile -t tags < <(git tag --points-at HEAD --list 'v*')
    if [ ${#tags[@]} -eq 0 ]; then
        echo "tag-check: HEAD carries no v* tag: no release tag to check against v$version"
        exit 0
    fi
fi
for tag in "${tags[@]}"; do
    if [ "$tag" != "v$version" ]; then
        echo "tag-check: tag '$tag' is not v$version (the version in pyproject.toml)" >&2
        exit 1
    fi
done
echo "tag-check: tag ${tags[*]} names version $version"
