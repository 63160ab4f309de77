# The default guest's demonstration: `k42vm run` with no --kernel, --initrd or --cmdline, when
# k42vm's standard input is not a terminal. Debian's busybox sh runs it unmodified through the
# Linux personality of the k42 kernel; every command below is a Linux process of ours.
echo "== k42: busybox sh, a static Linux binary, on the k42 kernel"
uname -s -r -m
echo "== the initramfs, served by the file-system server"
ls /
cat /etc/motd
echo "== a pipeline of five processes"
seq 1 100 | grep 7 | sort -r | head -n 3 | tr '\n' ' '
echo
seq 1 100 | awk '{ s += $1 } END { print "sum of 1..100:", s }'
echo "== files in /tmp"
echo "written by the guest" > /tmp/note
cp /tmp/note /tmp/copy
md5sum /tmp/note /tmp/copy
wc -c < /tmp/copy
echo "== background jobs and wait"
(sleep 1; echo "job 1 done") &
(echo "job 2 done") &
wait
echo "== exit codes, subshells, \$(...)"
sh -c 'exit 7'
echo "sh -c 'exit 7' gave $?"
echo "there are $(ls /bin | wc -l) files in /bin"
echo "== the processes now: the kernel's list, read through /proc by busybox ps"
ps -o pid,ppid,pgid,comm,args
echo "== done"
