# Sourced by scripts/setup-*-venv.sh: what building a virtualenv apart from .venv takes. The caller sets ROOT
# (the repository), VENV (the virtualenv's directory) and NAME (the prefix of its messages) first.

die() { echo "$NAME: $*" >&2; exit 1; }

# The interpreter to build from: $PYTHON, else the one .venv was made from, else python3.11, else python3.
pick_python() {
    if [[ -n ${PYTHON:-} ]]; then
        echo "$PYTHON"; return
    fi
    if [[ -f $ROOT/.venv/pyvenv.cfg ]]; then
        local home
        home=$(sed -n 's/^home *= *//p' "$ROOT/.venv/pyvenv.cfg")
        for name in python3.11 python3; do
            if [[ -x $home/$name ]]; then echo "$home/$name"; return; fi
        done
    fi
    command -v python3.11 || command -v python3 || die "no python3 found; set PYTHON"
}

# "3.11" for the interpreter $1 (nothing if it does not run).
py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

# Idempotence: the stamp holds what the last complete run built ($1); $2 is a file that run leaves behind.
STAMP=$VENV/.codeindex-setup
up_to_date() { [[ -f $STAMP && $(cat "$STAMP") == "$1" && -x $2 ]]; }

# $VENV made with interpreter $1 (Python $2), or kept when it already runs that version.
make_venv() {
    if [[ -x $VENV/bin/python && $(py_version "$VENV/bin/python") == "$2" ]]; then
        echo "$NAME: updating $VENV"
    else
        echo "$NAME: creating $VENV with $1 (Python $2)"
        rm -rf "$VENV"
        "$1" -m venv "$VENV"
    fi
}
