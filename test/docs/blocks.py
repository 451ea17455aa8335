#!/usr/bin/env python3
"""Turns the SQL blocks of Markdown pages into one psql script per page, for
test/process/docs_run.sh.  Every fenced block whose info string starts with
`sql` runs, in page order; the words after `sql` say how:

    ```sql                  runs in the settle database (named by --db)
    ```sql db=postgres      runs in the pg_cron database (cron.database_name)
    ```sql error=P0002      must fail with that SQLSTATE (its last statement)
    ```sql no-run           not run: it cannot run in a test (say why next to it)

Anything else after `sql` is an error, so a typo cannot turn a block off.
A page whose statements need another page's setup says so in a line of its
own, `<!-- docs-run: after docs/finance-guide.md -->`: that page's blocks
run first, in the same session (a failure there fails this page too).
Blocks of other languages (sh, plain) are not run.  psql meta-commands
(\\gset, \\i, \\set) work: the page's blocks share one psql session, which
\\connects to the block's database when it differs from the last block's.

    blocks.py --db settle --cron-db postgres page.md > page.psql   (script)
    blocks.py --list page.md                                       (one line a block)
"""
import argparse
import re
import sys

FENCE = re.compile(r'^(\s*)(```+|~~~+)\s*(.*)$')


def blocks(path):
    """(line, info words, text) of every fenced block of the page."""
    out = []
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info, start = m.group(2), m.group(3).split(), i + 1
        body = []
        i += 1
        while i < len(lines) and not re.match(r'^\s*' + re.escape(fence[0]) + '{%d,}\\s*$' % len(fence), lines[i]):
            body.append(lines[i])
            i += 1
        if i >= len(lines):
            sys.exit('%s:%d: unterminated code block' % (path, start))
        i += 1
        out.append((start, info, '\n'.join(body)))
    return out


def sql_blocks(path):
    """(line, mode, arg, text) of the page's sql blocks; mode run, error or skip."""
    res = []
    for line, info, text in blocks(path):
        if not info or info[0] != 'sql':
            continue
        db, mode, arg = 'settle', 'run', None
        for w in info[1:]:
            if w == 'no-run':
                mode = 'skip'
            elif w.startswith('db='):
                db = w[3:]
            elif re.fullmatch(r'error=[0-9A-Z]{5}', w):
                mode, arg = 'error', w[6:]
            else:
                sys.exit('%s:%d: unknown word "%s" after ```sql (db=..., error=SQLSTATE, no-run)' % (path, line, w))
        if db not in ('settle', 'postgres'):
            sys.exit('%s:%d: db=%s: blocks run in db=postgres (pg_cron) or the settle database' % (path, line, db))
        res.append((line, mode, arg, db, text))
    return res


AFTER = re.compile(r'^<!-- docs-run: after (\S+) -->$')


def setup_page(path):
    """The page named by the page's `docs-run: after` line, or None."""
    with open(path, encoding='utf-8') as f:
        for line in f:
            m = AFTER.match(line.strip())
            if m:
                return m.group(1)
    return None


def quote(s):
    return "'" + s.replace("'", "''") + "'"


def emit(path, db, cron_db, out, state):
    """Appends the psql script of the page's blocks (its setup page's first)."""
    before = setup_page(path)
    if before:
        if before == path or before in state['pages']:
            sys.exit('%s: docs-run: after %s makes a loop' % (path, before))
        state['pages'].append(path)
        emit(before, db, cron_db, out, state)
    for line, mode, arg, where, text in sql_blocks(path):
        if mode == 'skip':
            continue
        target = cron_db if where == 'postgres' else db
        where_am_i = '%s:%d' % (path, line)
        out.append('\\echo ==== %s (%s%s)' % (where_am_i, target, ', must fail with ' + arg if arg else ''))
        if target != state['current']:   # a new connection only when the database changes: SET and \\gset carry on
            out.append('\\connect %s' % target)
            state['current'] = target
        if mode == 'error':
            out += ['\\set ON_ERROR_STOP 0', '\\set LAST_ERROR_SQLSTATE 00000', text.rstrip(), '',
                    '\\set ON_ERROR_STOP 1',
                    'SELECT :ERROR AND :\'LAST_ERROR_SQLSTATE\' = %s AS docs_error_ok \\gset' % quote(arg),
                    '\\if :docs_error_ok',
                    '\\else',
                    '\\echo DOCS-FAIL %s: expected SQLSTATE %s, got :LAST_ERROR_SQLSTATE' % (where_am_i, arg),
                    "SELECT 'docs test: the block did not fail as it says'::integer;",
                    '\\endif']
        else:
            out.append(text.rstrip())
            out.append('')


def script(path, db, cron_db):
    out = ['\\set ON_ERROR_STOP 1', '\\set VERBOSITY verbose']
    emit(path, db, cron_db, out, {'current': None, 'pages': []})
    out.append('\\echo ==== end of %s' % path)
    return '\n'.join(out) + '\n'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--db', default='settle')
    ap.add_argument('--cron-db', default='postgres')
    ap.add_argument('--list', action='store_true')
    ap.add_argument('page')
    a = ap.parse_args()
    if a.list:
        for line, mode, arg, where, _ in sql_blocks(a.page):
            print('%s:%d %s %s%s' % (a.page, line, mode, where, ' ' + arg if arg else ''))
    else:
        sys.stdout.write(script(a.page, a.db, a.cron_db))


if __name__ == '__main__':
    main()
