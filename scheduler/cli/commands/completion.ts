// `tunefleet completion bash|zsh|fish`: a completion script for the shell, made from the
// program's own commands and options (so it never drifts from --help), plus the commands
// bin/tunefleet dispatches elsewhere (agent, up, down).
import { Command } from 'commander';
import { ErrorCode, TunefleetError } from '../../../shared';

/** Commands bin/tunefleet sends to other modules before this program is built. */
const DISPATCHED: [string, string][] = [
  ['agent', 'run an agent daemon on this machine (agent start --help)'],
  ['up', 'start the local stack'],
  ['down', 'stop the local stack'],
];

interface Entry {
  name: string;
  about: string;
  flags: string[];
  subcommands: string[];
}

function entries(program: Command): Entry[] {
  const own = program.commands
    .filter((c) => c.name() !== 'completion')
    .map((c) => ({
      name: c.name(),
      about: c.description(),
      flags: c.options.map((o) => o.long ?? o.short ?? '').filter(Boolean),
      subcommands: c.commands.map((s) => s.name()),
    }));
  const more = DISPATCHED.map(([name, about]) => ({
    name,
    about,
    flags: [],
    subcommands: name === 'agent' ? ['start'] : [],
  }));
  return [
    ...own,
    ...more,
    { name: 'completion', about: 'print a shell completion script', flags: [], subcommands: ['bash', 'zsh', 'fish'] },
  ];
}

const words = (xs: string[]): string => xs.join(' ');
/** A description safe inside single quotes, on one line. */
const quoted = (s: string): string => s.replace(/'/g, "'\\''").replace(/\s+/g, ' ');

function bash(es: Entry[]): string {
  const cases = es
    .map((e) => `    ${e.name}) words="${words([...e.subcommands, ...e.flags, '--help'])}" ;;`)
    .join('\n');
  return `# tunefleet completion for bash: source <(tunefleet completion bash)
_tunefleet() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" words
  if [ "\${COMP_CWORD}" -eq 1 ]; then
    COMPREPLY=( $(compgen -W "${words(es.map((e) => e.name))} --help --version" -- "$cur") )
    return 0
  fi
  case "\${COMP_WORDS[1]}" in
${cases}
    *) words="" ;;
  esac
  COMPREPLY=( $(compgen -W "$words" -- "$cur") )
}
complete -o default -F _tunefleet tunefleet
`;
}

function zsh(es: Entry[]): string {
  const cmds = es.map((e) => `    '${e.name}:${quoted(e.about).replace(/:/g, '\\:')}'`).join('\n');
  const cases = es
    .map(
      (e) =>
        `    ${e.name}) _values 'option' ${[...e.subcommands, ...e.flags, '--help'].map((w) => `'${w}'`).join(' ')} ;;`,
    )
    .join('\n');
  return `#compdef tunefleet
# tunefleet completion for zsh: tunefleet completion zsh > "\${fpath[1]}/_tunefleet"
_tunefleet() {
  local -a cmds
  cmds=(
${cmds}
  )
  if (( CURRENT == 2 )); then
    _describe 'command' cmds
    return
  fi
  case "\${words[2]}" in
${cases}
    *) _files ;;
  esac
}
compdef _tunefleet tunefleet
`;
}

function fish(es: Entry[]): string {
  const lines = es.flatMap((e) => [
    `complete -c tunefleet -n __fish_use_subcommand -a ${e.name} -d '${quoted(e.about)}'`,
    ...e.subcommands.map((s) => `complete -c tunefleet -n '__fish_seen_subcommand_from ${e.name}' -a ${s}`),
    ...e.flags
      .filter((f) => f.startsWith('--'))
      .map((f) => `complete -c tunefleet -n '__fish_seen_subcommand_from ${e.name}' -l ${f.slice(2)}`),
  ]);
  const head = '# tunefleet completion for fish: tunefleet completion fish > ~/.config/fish/completions/tunefleet.fish';
  return `${head}\n${lines.join('\n')}\n`;
}

export function completionCommand(program: Command): void {
  program
    .command('completion')
    .description('print a shell completion script: bash, zsh or fish')
    .argument('<shell>', 'bash | zsh | fish')
    .addHelpText(
      'after',
      '\nExample:\n  tunefleet completion bash > /etc/bash_completion.d/tunefleet' +
        '\n  source <(tunefleet completion bash)   # this shell only',
    )
    .action((shell: string) => {
      const es = entries(program);
      if (shell === 'bash') process.stdout.write(bash(es));
      else if (shell === 'zsh') process.stdout.write(zsh(es));
      else if (shell === 'fish') process.stdout.write(fish(es));
      else
        throw new TunefleetError(
          ErrorCode.FlagInvalid,
          `'${shell}' is not a shell this prints for: bash, zsh or fish`,
          { field: 'shell' },
        );
    });
}
