using VirtioSharp.Tests.Vm;

namespace VirtioSharp.Tests.Rbd;

/// <summary>
/// One boot of the real Linux test guest (its virtio_blk driver, 2 vCPUs, 2 queues) against
/// <c>vblk serve rbd:...</c> on a throwaway Ceph cluster; the image is then exported with Ceph's
/// own <c>rbd export</c> and checked on the host. Disk layout (scripts/guest-init): ext4 in
/// [0,64) MiB, the pattern at 64 MiB, discard [80,84), write-zeroes [84,88), fio [96,128); last,
/// the image is grown with <c>rbd resize</c> from 256 to <see cref="ResizedMiB"/> MiB while the
/// guest waits for the new size, and it writes a pattern in the new last MiB.
/// </summary>
public sealed class RbdGuestFixture : IDisposable
{
    public RbdGuestFixture()
    {
        LinuxGuest.EnsureBuilt();
        Ceph = new CephCluster();
        WorkDir = Directory.CreateTempSubdirectory("vblk-rbd-vm-").FullName;
        Ceph.CreateImage("guest", 256L << 20);
        var socket = Path.Combine(WorkDir, "vblk.sock");
        using (var server = new BackgroundProcess("dotnet", [Repo.VblkDll, "serve", "rbd:rbd/guest", "--ceph-conf", Ceph.Conf,
            "--socket", socket, "--num-queues", "2", "--strict=fail"]))
        {
            server.WaitForSocket(socket, TimeSpan.FromSeconds(60));
            const string jobs = "write-read,discard,fio,ext4,resize";
            LinuxGuest.Run? run = null;
            var boot = new Thread(() => run = LinuxGuest.Boot(socket, jobs, vcpus: 2, queues: 2, WorkDir, $"vblk.discard_zeroes=1 vblk.resize_mib={ResizedMiB}", timeoutSeconds: 420));
            boot.Start();
            ResizeWhenAsked(LinuxGuest.ConsoleLog(WorkDir, jobs), boot);
            boot.Join();
            Guest = run!;
            ServerExit = server.Stop(TimeSpan.FromSeconds(60));
            ServerLog = server.Output;
        }
        Image = Path.Combine(WorkDir, "exported.raw");
        Ceph.Rbd("export", "rbd/guest", Image);
    }

    public const int ResizedMiB = 320;

    /// <summary>Grows the image with Ceph's own tool once the guest's resize job says it waits.</summary>
    private void ResizeWhenAsked(string console, Thread boot)
    {
        while (boot.IsAlive)
        {
            if (File.Exists(console) && File.ReadAllText(console).Contains("VBLK-RESIZE-READY", StringComparison.Ordinal))
            {
                Ceph.Rbd("resize", "--size", $"{ResizedMiB}M", "rbd/guest");
                Resized = true;
                return;
            }
            Thread.Sleep(200);
        }
    }

    /// <summary>The guest asked for the resize and <c>rbd resize</c> ran.</summary>
    public bool Resized { get; private set; }

    public CephCluster Ceph { get; }
    public string WorkDir { get; }
    /// <summary>The image as <c>rbd export</c> wrote it after the guest powered off.</summary>
    public string Image { get; }
    public LinuxGuest.Run Guest { get; }
    public int ServerExit { get; }
    public string ServerLog { get; }

    public void Dispose()
    {
        Ceph.Dispose();
        Directory.Delete(WorkDir, recursive: true);
    }
}

[Trait("Category", "Vm")]
[Trait("Category", "Ceph")]
public sealed class VmOnRbdTests(RbdGuestFixture vm) : IClassFixture<RbdGuestFixture>
{
    private static void Pass(LinuxGuest.Run run, string job) =>
        Assert.True(run.Verdict(job).StartsWith("PASS", StringComparison.Ordinal), $"guest job {job}: {run.Verdict(job)}\n{run.Output}");

    [Fact]
    public void Guest_fio_with_crc32c_verify_over_2_queues_passes_on_rbd()
    {
        Pass(vm.Guest, "fio");
        Assert.Contains("librbd requests asynchronous", vm.ServerLog);
    }

    [Fact]
    public void Guest_makes_ext4_and_the_exported_image_passes_e2fsck()
    {
        Pass(vm.Guest, "ext4");
        var (code, output) = Repo.Run("e2fsck", ["-f", "-n", vm.Image], TimeSpan.FromMinutes(1));
        Assert.True(code == 0, $"e2fsck -fn on the exported image: exit {code}\n{output}");
    }

    [Fact]
    public void Guest_pattern_discard_and_write_zeroes_are_in_the_exported_image()
    {
        Pass(vm.Guest, "write-read");
        Pass(vm.Guest, "discard");
        Assert.Equal(LinuxGuest.Pattern(64, 1), LinuxGuest.ReadImage(vm.Image, 64L << 20, 1 << 20));
        var zeroes = LinuxGuest.ReadImage(vm.Image, 80L << 20, 8 << 20);
        Assert.True(Array.TrueForAll(zeroes, b => b == 0), "the discarded and write-zeroed range [80,88) MiB holds non-zero bytes");
    }

    [Fact]
    public void Guest_sees_an_rbd_resize_as_a_config_change_and_writes_in_the_new_area()
    {
        Assert.True(vm.Resized, $"the guest never asked for the resize\n{vm.Guest.Output}");
        Pass(vm.Guest, "resize");
        Assert.Contains("was resized from 268435456 to 335544320 bytes", vm.ServerLog);
        Assert.Contains("configuration change sent to the front-end (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG), acknowledged", vm.ServerLog);
        Assert.Equal((long)RbdGuestFixture.ResizedMiB << 20, new FileInfo(vm.Image).Length);
        Assert.Equal(LinuxGuest.Pattern(RbdGuestFixture.ResizedMiB - 1, 1), LinuxGuest.ReadImage(vm.Image, (long)(RbdGuestFixture.ResizedMiB - 1) << 20, 1 << 20));
    }

    [Fact]
    public void Linux_breaks_no_driver_requirement_and_the_server_stops_cleanly()
    {
        Assert.DoesNotContain("driver breach", vm.ServerLog, StringComparison.Ordinal);
        var served = System.Text.RegularExpressions.Regex.Matches(vm.ServerLog, @"served \d+ requests: .*? (\d+) I/O errors");
        Assert.NotEmpty(served);
        Assert.All(served, m => Assert.True(m.Groups[1].Value == "0", m.Value));
        Assert.True(vm.ServerExit == 0, $"vblk serve exited with {vm.ServerExit}\n{vm.ServerLog}");
    }
}
