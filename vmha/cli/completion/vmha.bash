# bash completion for vmha: verbs, their options, and module names (asked of vmhad with
# `vmha status --json`, else read from the modules folder).
# Installed as share/bash-completion/completions/vmha; or: source vmha.bash

_vmha_modules() {
    local socket_args=("$@") names
    names=$(vmha "${socket_args[@]}" --timeout 2 status --json 2>/dev/null |
        sed -n 's/^ *"name": *"\([^"]*\)".*/\1/p')
    if [[ -z $names ]]; then
        local dir=/etc/vmha/modules f
        for f in "$dir"/*.yaml; do
            [[ -e $f ]] && names+=" $(basename "$f" .yaml)"
        done
    fi
    echo "$names"
}

_vmha() {
    local cur prev verb i socket_args=()
    COMPREPLY=()
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    local verbs="status state start stop restart swap prim second failover resync verify log schedule config help"
    local global="--socket --timeout --log-level --help --version"

    # The verb is the first word that is not a global option (or its value).
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --socket) socket_args=(--socket "${COMP_WORDS[i+1]}"); ((i++)) ;;
            --timeout|--log-level) ((i++)) ;;
            -*) ;;
            *) verb=${COMP_WORDS[i]}; break ;;
        esac
    done

    case $prev in
        --socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --log-level) COMPREPLY=($(compgen -W "error warn info debug trace" -- "$cur")); return ;;
        --timeout|-n|--lines|--at|--cancel) return ;;
        --to) COMPREPLY=($(compgen -W "$(vmha "${socket_args[@]}" --timeout 2 status --json 2>/dev/null |
                  sed -n 's/^ *"node": *"\([^"]*\)".*/\1/p' | sort -u)" -- "$cur")); return ;;
    esac

    if [[ -z $verb ]]; then
        COMPREPLY=($(compgen -W "$verbs $global" -- "$cur"))
        return
    fi

    local opts="--json --help"
    case $verb in
        prim) opts+=" --force --yes" ;;
        resync) opts+=" --full --watch" ;;
        verify) opts+=" --mark --watch" ;;
        log) opts+=" -n --lines -f --follow" ;;
        swap) opts+=" --at --to" ;;
        schedule) opts+=" --cancel" ;;
        help) COMPREPLY=($(compgen -W "$verbs" -- "$cur")); return ;;
        config)
            if [[ $prev == config ]]; then
                COMPREPLY=($(compgen -W "check" -- "$cur"))
            else
                COMPREPLY=($(compgen -f -W "--json --quiet" -- "$cur"))
            fi
            return ;;
        failover)
            if [[ $prev == failover ]]; then
                COMPREPLY=($(compgen -W "on off" -- "$cur"))
                return
            fi ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$(_vmha_modules "${socket_args[@]}")" -- "$cur"))
    fi
}

complete -F _vmha vmha
