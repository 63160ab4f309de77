# Signals in busybox sh: trap handlers, kill of itself and of a child, exit statuses of
# processes ended by a signal, SIGPIPE in a pipeline.
trap 'echo caught USR1' USR1
kill -USR1 $$
echo after kill
sh -c 'kill -TERM $$; echo not here'
echo "self-killed child status: $?"
# Whether sh reports the killed background job ("Terminated", on stderr) depends on when it
# reaps it, on Linux too (both ways seen on the host): only the status is compared.
{
    sleep 30 &
    sleeper=$!
    kill $sleeper
    wait $sleeper
    echo "killed sleeper status: $?"
} 2>/dev/null
seq 1 100000 | head -n 2
echo "pipeline status: $?"
trap 'echo bye from EXIT trap' EXIT
exit 4
