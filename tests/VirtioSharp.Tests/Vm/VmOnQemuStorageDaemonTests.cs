namespace VirtioSharp.Tests.Vm;

/// <summary>
/// The control experiment: the same guest jobs against the reference back-end,
/// qemu-storage-daemon, so a failing job on our back-end is not a guest problem.
/// </summary>
[Trait("Category", "Vm")]
public sealed class VmOnQemuStorageDaemonTests
{
    [Fact]
    public void Reference_back_end_passes_the_guest_jobs()
    {
        LinuxGuest.EnsureBuilt();
        var work = Directory.CreateTempSubdirectory("vblk-qsd-").FullName;
        try
        {
            var image = Path.Combine(work, "disk.img");
            using (var f = new FileStream(image, FileMode.CreateNew))
                f.SetLength(256L << 20);
            var socket = Path.Combine(work, "qsd.sock");
            using var qsd = new BackgroundProcess("qemu-storage-daemon",
            [
                "--blockdev", $"driver=file,node-name=file0,filename={image},discard=unmap",
                "--blockdev", "driver=raw,node-name=disk0,file=file0,discard=unmap",
                "--export", $"type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={socket},writable=on,num-queues=2",
                "--pidfile", Path.Combine(work, "qsd.pid"),
            ]);
            // Its socket file appears at bind(), before listen(); the pid file once the export listens (qemu-storage-daemon(1)).
            qsd.WaitForSocket(Path.Combine(work, "qsd.pid"), TimeSpan.FromSeconds(30), withContent: true);
            var run = LinuxGuest.Boot(socket, "write-read,discard,ext4", vcpus: 2, queues: 2, work, "vblk.discard_zeroes=1");
            foreach (var job in new[] { "write-read", "discard", "ext4" })
                Assert.True(run.Verdict(job).StartsWith("PASS", StringComparison.Ordinal), $"{job}: {run.Verdict(job)}\n{run.Output}");
            Assert.Equal(LinuxGuest.Pattern(64, 1), LinuxGuest.ReadImage(image, 64L << 20, 1 << 20));
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }
}
