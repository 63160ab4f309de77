# Pipes, redirections, subshells, command substitution and exit codes in busybox sh.
echo start
echo one two three | tr ' ' '\n' | sort -r
cat data/words | grep an | wc -l
x=$(echo substituted)
echo "x is $x"
echo "count: $(cat data/numbers | wc -l)"
(echo in a subshell; exit 3)
echo "subshell exit: $?"
false || echo "false failed"
true && echo "true succeeded"
echo to a file > tmp/out.txt
echo appended >> tmp/out.txt
cat < tmp/out.txt
wc -l < tmp/out.txt
ls data | head -n 2
for w in a b c; do echo "loop $w"; done | sort -r
sh -c 'exit 7'
echo "child sh exit: $?"
rm tmp/out.txt
echo done
