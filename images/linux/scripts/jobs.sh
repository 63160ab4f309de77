# Background jobs and wait, here documents, stderr redirection, functions, case, read loops,
# find and xargs, and set -e ending the script.
echo bg start
(echo job one; exit 5) > tmp/job1.txt &
pid1=$!
sh -c 'echo job two' > tmp/job2.txt &
wait $pid1
echo "job one status: $?"
wait
cat tmp/job1.txt tmp/job2.txt
rm tmp/job1.txt tmp/job2.txt
cat <<END
here document line 1
here $((6 * 7))
END
echo to stderr >&2
ls data/nothing 2>&1 | sed 's/^/err: /'
f() { echo "in function $1"; return 2; }
f arg; echo "function returned $?"
case hello in h*) echo matched ;; *) echo nope ;; esac
printf '%s\n' c a b | while read line; do echo "read $line"; done
find data -name 'w*' | sort
echo data/words data/numbers | xargs wc -l
set -e
(false; echo not reached)
echo also not reached
