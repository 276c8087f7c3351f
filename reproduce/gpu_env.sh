# Sourced by gpu_check.sh and gpu_recipes.sh on a lent GPU machine (its own python3 and torch, no network): the
# wheels and data that gpu_prepare.sh put in $CARRIED, installed where the scripts' python3 finds them.
CARRIED=${CARRIED:-.gpu}
export PYTHONUNBUFFERED=1 PYTHONPATH="/tmp/site:$PWD"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$CARRIED"/whl/*.whl || exit 2
if [ ! -d /usr/share/datasets/fashion-mnist ]; then mkdir -p /usr/share/datasets && cp -r "$CARRIED/fashion-mnist" /usr/share/datasets/; fi
