namespace VirtioSharp.Tests.Vm;

/// <summary>
/// One boot of a real Linux guest (its own virtio_blk driver, 2 vCPUs, 2 queues) against
/// `vblk serve --strict=fail` on a raw image; each guest job and each host-side check of the
/// image is a test. Disk layout (scripts/guest-init): ext4 in [0,64) MiB, the pattern at 64 MiB,
/// discard [80,84), write-zeroes [84,88), fio [96,128).
/// </summary>
public class VblkServeGuestFixture : IDisposable
{
    public VblkServeGuestFixture() : this(packed: false)
    {
    }

    protected VblkServeGuestFixture(bool packed)
    {
        Packed = packed;
        var jobs = packed ? "packed,write-read,discard,fio,ext4" : "write-read,discard,fio,ext4";
        LinuxGuest.EnsureBuilt();
        WorkDir = Directory.CreateTempSubdirectory("vblk-vm-").FullName;
        Image = Path.Combine(WorkDir, "disk.img");
        using (var f = new FileStream(Image, FileMode.CreateNew))
            f.SetLength(256L << 20);
        var socket = Path.Combine(WorkDir, "vblk.sock");
        using (var server = new BackgroundProcess("dotnet", [Repo.VblkDll, "serve", Image, "--socket", socket, "--num-queues", "2", "--strict=fail"]))
        {
            server.WaitForSocket(socket, TimeSpan.FromSeconds(30));
            // no_timer_check: a TCG guest on a loaded host may miss the IO-APIC timer check and panic at boot.
            Writable = LinuxGuest.Boot(socket, jobs, vcpus: 2, queues: 2, WorkDir, "vblk.discard_zeroes=1 no_timer_check", packed: packed);
            ServerExit = server.Stop(TimeSpan.FromSeconds(30));
            ServerLog = server.Output;
        }
        Recording = Path.Combine(WorkDir, "guest.jsonl");
        using (var server = new BackgroundProcess("dotnet", [Repo.VblkDll, "serve", Image, "--socket", socket, "--read-only", "--strict=fail", "--record", Recording, "--record-limit", "100"]))
        {
            server.WaitForSocket(socket, TimeSpan.FromSeconds(30));
            ReadOnly = LinuxGuest.Boot(socket, packed ? "packed,readonly,read-pattern" : "readonly,read-pattern", vcpus: 1, queues: 1, WorkDir, "no_timer_check", packed: packed);
            ReadOnlyServerExit = server.Stop(TimeSpan.FromSeconds(30));
            ReadOnlyServerLog = server.Output;
        }
    }

    /// <summary>QEMU offers the guest packed virtqueues (packed=on), which vblk serve offers by default.</summary>
    public bool Packed { get; }
    public string WorkDir { get; }
    public string Image { get; }
    public LinuxGuest.Run Writable { get; }
    public LinuxGuest.Run ReadOnly { get; }
    public int ServerExit { get; }
    public string ServerLog { get; }
    /// <summary>The read-only boot's rings, recorded by vblk serve --record (the first 100 requests).</summary>
    public string Recording { get; }
    public int ReadOnlyServerExit { get; }
    public string ReadOnlyServerLog { get; }

    public void Dispose() => Directory.Delete(WorkDir, recursive: true);
}

/// <summary>The same boots with QEMU's vhost-user-blk-pci packed=on: the guest's driver runs packed virtqueues (2.8).</summary>
public sealed class PackedVblkServeGuestFixture() : VblkServeGuestFixture(packed: true);

[Trait("Category", "Vm")]
public sealed class VmOnVblkServeTests(VblkServeGuestFixture vm) : VblkServeGuestTests(vm), IClassFixture<VblkServeGuestFixture>;

[Trait("Category", "Vm")]
public sealed class VmOnVblkServePackedTests(PackedVblkServeGuestFixture vm) : VblkServeGuestTests(vm), IClassFixture<PackedVblkServeGuestFixture>
{
    private readonly PackedVblkServeGuestFixture _vm = vm;

    [Fact]
    public void The_guest_driver_negotiated_packed_rings_and_the_back_end_ran_them_2_8()
    {
        // /sys/block/vda/device/features, bit 34 (VIRTIO_F_RING_PACKED), checked inside the guest.
        Pass(_vm.Writable, "packed");
        Pass(_vm.ReadOnly, "packed");
        Assert.Contains("queue 0: started: packed ring", _vm.ServerLog, StringComparison.Ordinal);
        Assert.Contains("queue 1: started: packed ring", _vm.ServerLog, StringComparison.Ordinal);
        Assert.Contains("queue 0: started: packed ring", _vm.ReadOnlyServerLog, StringComparison.Ordinal);
    }
}

/// <summary>The guest jobs and host checks, for either ring format.</summary>
public abstract class VblkServeGuestTests(VblkServeGuestFixture vm)
{
    protected static void Pass(LinuxGuest.Run run, string job) =>
        Assert.True(run.Verdict(job).StartsWith("PASS", StringComparison.Ordinal), $"guest job {job}: {run.Verdict(job)}\n{run.Output}");

    [Fact]
    public void Guest_writes_a_pattern_and_reads_it_back_and_the_image_holds_it_at_64_MiB()
    {
        Pass(vm.Writable, "write-read");
        Assert.Equal(LinuxGuest.Pattern(64, 1), LinuxGuest.ReadImage(vm.Image, 64L << 20, 1 << 20));
    }

    [Fact]
    public void Guest_makes_ext4_and_the_image_passes_e2fsck_on_the_host()
    {
        Pass(vm.Writable, "ext4");
        var (code, output) = Repo.Run("e2fsck", ["-f", "-n", vm.Image], TimeSpan.FromMinutes(1));
        Assert.True(code == 0, $"e2fsck -fn on the image: exit {code}\n{output}");
    }

    [Fact]
    public void Guest_fio_with_crc32c_verify_at_depth_32_over_2_queues_passes()
    {
        Pass(vm.Writable, "fio");
        // Both queues carried requests: at the guest's last stop each stood at a non-zero available index.
        foreach (var q in new[] { 0, 1 })
        {
            if (vm.Packed)
            {
                // A packed ring's position is a slot and a wrap counter: it carried requests if it was kicked.
                var packedStops = System.Text.RegularExpressions.Regex.Matches(vm.ServerLog, $@"queue {q}: stopped at avail slot \d+ wrap \d, used slot \d+ wrap \d \((\d+) kicks");
                Assert.True(packedStops.Count > 0 && int.Parse(packedStops[^1].Groups[1].Value) > 0, $"queue {q} carried no requests\n{vm.ServerLog}");
                continue;
            }
            var stops = System.Text.RegularExpressions.Regex.Matches(vm.ServerLog, $@"queue {q}: stopped at available index (\d+)");
            Assert.True(stops.Count > 0 && int.Parse(stops[^1].Groups[1].Value) > 0, $"queue {q} carried no requests\n{vm.ServerLog}");
        }
    }

    [Fact]
    public void Guest_discard_and_write_zeroes_leave_zeroes_in_the_image()
    {
        Pass(vm.Writable, "discard");
        var zeroes = LinuxGuest.ReadImage(vm.Image, 80L << 20, 8 << 20);
        Assert.True(Array.TrueForAll(zeroes, b => b == 0), "the discarded and write-zeroed range [80,88) MiB holds non-zero bytes");
    }

    [Fact]
    public void Read_only_export_refuses_the_guests_writes_and_still_serves_the_pattern()
    {
        Pass(vm.ReadOnly, "readonly");
        Pass(vm.ReadOnly, "read-pattern");
        Assert.Equal(LinuxGuest.Pattern(64, 1), LinuxGuest.ReadImage(vm.Image, 64L << 20, 1 << 20));
    }

    [Fact]
    public void Linux_virtio_blk_breaks_no_driver_requirement_under_strict_fail()
    {
        Assert.DoesNotContain("driver breach", vm.ServerLog, StringComparison.Ordinal);
        Assert.DoesNotContain("driver breach", vm.ReadOnlyServerLog, StringComparison.Ordinal);
        Assert.DoesNotContain("needs reset", vm.ServerLog, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void Recording_of_the_guests_rings_renders_in_the_explorer_page()
    {
        Assert.True(File.Exists(vm.Recording), $"vblk serve --record wrote no file\n{vm.ReadOnlyServerLog}");
        var recording = VirtioSharp.Diagnostics.RecordingFormat.Read(vm.Recording);
        // The Linux driver's ring as the device saw it: geometry, then chains taken and returned.
        Assert.Contains(recording.Events, e => e.GetProperty("k").GetString() == "QueueSetup");
        Assert.Contains(recording.Events, e => e.GetProperty("k").GetString() == "UsedRingWrite"
            && e.TryGetProperty("wrap", out _) == vm.Packed); // a packed ring's used descriptors carry the Device Ring Wrap Counter
        if (vm.Packed)
            Assert.Contains(recording.Events, e => e.GetProperty("k").GetString() == "EventSuppression");
        // The kicks the device read from the guest's driver, and the calls it wrote back.
        Assert.Contains(recording.Events, e => e.GetProperty("k").GetString() == "Notification" && e.GetProperty("name").GetString() == "kick");
        Assert.Contains(recording.Events, e => e.GetProperty("k").GetString() == "Interrupt" && e.GetProperty("name").GetString() == "raised");
        Assert.Equal(100, recording.Header.GetProperty("requestLimit").GetInt32());
        Explorer.ExplorerBrowserTests.ViewAndCheck(vm.Recording, Path.Combine(vm.WorkDir, "guest.html"));
    }

    [Fact]
    public void Server_stops_cleanly_on_SIGTERM()
    {
        Assert.True(vm.ServerExit == 0, $"vblk serve exited with {vm.ServerExit}\n{vm.ServerLog}");
        Assert.True(vm.ReadOnlyServerExit == 0, $"vblk serve --read-only exited with {vm.ReadOnlyServerExit}\n{vm.ReadOnlyServerLog}");
    }
}
