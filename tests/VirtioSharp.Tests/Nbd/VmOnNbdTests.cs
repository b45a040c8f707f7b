using VirtioSharp.Tests.VhostUser;
using VirtioSharp.Tests.Vm;

namespace VirtioSharp.Tests.Nbd;

/// <summary>
/// One boot of the real Linux test guest (its virtio_blk driver, 2 vCPUs, 2 queues) against
/// <c>vblk serve nbd+unix:///...</c> in front of qemu-nbd exporting a raw file; after the guest
/// powers off, the host checks that file itself. Disk layout (scripts/guest-init): ext4 in
/// [0,64) MiB, fio in [96,128) MiB.
/// </summary>
public sealed class NbdGuestFixture : IDisposable
{
    public NbdGuestFixture()
    {
        LinuxGuest.EnsureBuilt();
        Dir = new TempDir();
        Image = Dir.File("disk.raw");
        using (var f = File.Create(Image))
            f.SetLength(256L << 20);
        using var nbd = NbdServer.QemuNbd(Dir, Image, shared: 2);
        var socket = Dir.File("vblk.sock");
        using (var server = VblkServe.Start(socket, nbd.Uri, "--num-queues", "2", "--strict=fail"))
        {
            Guest = LinuxGuest.Boot(socket, "fio,ext4", vcpus: 2, queues: 2, Dir.Path);
            ServerExit = server.Stop(TimeSpan.FromSeconds(60));
            ServerLog = server.Output;
        }
        NbdServerAlive = !nbd.HasExited;
        NbdErrors = nbd.Errors;
    }

    public TempDir Dir { get; }
    /// <summary>The raw file qemu-nbd exported, read on the host after the guest powered off.</summary>
    public string Image { get; }
    public LinuxGuest.Run Guest { get; }
    public int ServerExit { get; }
    public string ServerLog { get; }
    public bool NbdServerAlive { get; }
    public string NbdErrors { get; }

    public void Dispose() => Dir.Dispose();
}

[Trait("Category", "Vm")]
public sealed class VmOnNbdTests(NbdGuestFixture vm) : IClassFixture<NbdGuestFixture>
{
    private static void Pass(LinuxGuest.Run run, string job) =>
        Assert.True(run.Verdict(job).StartsWith("PASS", StringComparison.Ordinal), $"guest job {job}: {run.Verdict(job)}\n{run.Output}");

    [Fact]
    public void Guest_fio_with_crc32c_verify_over_2_queues_passes_on_an_NBD_export()
    {
        Pass(vm.Guest, "fio");
        Assert.Contains("requests in flight per queue over 1 NBD connection", vm.ServerLog);
    }

    [Fact]
    public void Guest_makes_ext4_and_the_file_behind_qemu_nbd_passes_e2fsck_on_the_host()
    {
        Pass(vm.Guest, "ext4");
        var (code, output) = Repo.Run("e2fsck", ["-f", "-n", vm.Image], TimeSpan.FromMinutes(1));
        Assert.True(code == 0, $"e2fsck -fn on the file behind qemu-nbd: exit {code}\n{output}");
    }

    [Fact]
    public void Linux_breaks_no_driver_requirement_no_request_fails_and_both_servers_stay_up()
    {
        Assert.DoesNotContain("driver breach", vm.ServerLog, StringComparison.Ordinal);
        Assert.DoesNotContain("connection lost", vm.ServerLog, StringComparison.Ordinal);
        var served = System.Text.RegularExpressions.Regex.Matches(vm.ServerLog, @"served \d+ requests: .*? (\d+) I/O errors");
        Assert.NotEmpty(served);
        Assert.All(served, m => Assert.True(m.Groups[1].Value == "0", m.Value));
        Assert.True(vm.ServerExit == 0, $"vblk serve exited with {vm.ServerExit}\n{vm.ServerLog}");
        Assert.True(vm.NbdServerAlive, $"qemu-nbd exited during the run: {vm.NbdErrors}");
    }
}
