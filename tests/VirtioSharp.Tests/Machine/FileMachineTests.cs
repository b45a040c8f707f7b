using System.Diagnostics;
using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Machine;

/// <summary>The whole machine on a raw image file (5.2.6 requests end to end), and the Stream view.</summary>
public sealed class FileMachineTests : IDisposable
{
    private const ulong DiskSize = 8 << 20;
    private readonly string _dir;
    private readonly string _image;

    public FileMachineTests()
    {
        _dir = Path.Combine(Path.GetTempPath(), "vblk-test-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
        _image = Path.Combine(_dir, "disk.img");
        FileBackend.Create(_image, DiskSize);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private MachineRig Rig(BlkDeviceOptions? options = null) => new(FileBackend.Open(_image), queueSize: 32, maxTransfer: 128 * 1024, device: options);

    private static byte[] Random(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    private byte[] FileBytes(long offset, int length)
    {
        using var h = File.OpenHandle(_image, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var b = new byte[length];
        Assert.Equal(length, RandomAccess.Read(h, b, offset));
        return b;
    }

    /// <summary>Bytes the file system has allocated for the image (st_blocks * 512), or null if unknown.</summary>
    private long? AllocatedBytes()
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("stat", ["-c", "%b %B", _image]) { RedirectStandardOutput = true, UseShellExecute = false });
            if (p is null)
                return null;
            var output = p.StandardOutput.ReadToEnd().Split(' ', StringSplitOptions.RemoveEmptyEntries);
            p.WaitForExit();
            return p.ExitCode == 0 ? long.Parse(output[0]) * long.Parse(output[1]) : null;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }

    [Fact]
    public async Task Write_read_and_flush_go_to_the_file_5_2_6()
    {
        using var rig = Rig();
        var d = rig.Driver;
        Assert.Equal(DiskSize, d.Capacity);
        var data = Random(300 * 1024, 1); // larger than one request: split into several
        await d.WriteAsync(1 << 20, data);
        await d.FlushAsync();
        Assert.Equal(data, FileBytes(1 << 20, data.Length));

        var back = new byte[data.Length];
        await d.ReadAsync(1 << 20, back);
        Assert.Equal(data, back);

        // The last sector of the image.
        var last = Random(512, 2);
        await d.WriteAsync(DiskSize - 512, last);
        var lastBack = new byte[512];
        await d.ReadAsync(DiskSize - 512, lastBack);
        Assert.Equal(last, lastBack);
        Assert.Equal(last, FileBytes((long)DiskSize - 512, 512));

        Assert.True(rig.Device.Stats.Requests(BlkRequestType.Flush) >= 1);
        rig.AssertHealthy();
    }

    [Fact]
    public async Task Requests_beyond_the_disk_are_refused_by_the_driver_before_they_reach_the_device_5_2_6_1()
    {
        using var rig = Rig();
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await rig.Driver.WriteAsync(DiskSize, new byte[512]));
        await Assert.ThrowsAsync<ArgumentException>(async () => await rig.Driver.ReadAsync(100, new byte[512]));
        Assert.Equal(0, rig.Device.Stats.Total);
    }

    [Fact]
    public async Task Discard_punches_a_hole_5_2_6_2()
    {
        using var rig = Rig();
        var d = rig.Driver;
        Assert.True(VirtioFeatures.Has(d.Features, BlkFeatures.Discard));
        const ulong at = 2 << 20;
        const int length = 1 << 20;
        await d.WriteAsync(at, Random(length, 3));
        await d.FlushAsync();
        var before = AllocatedBytes();

        await d.DiscardAsync(at, length);
        await d.FlushAsync();

        var after = AllocatedBytes();
        var back = new byte[length];
        await d.ReadAsync(at, back);
        var readsZero = back.All(b => b == 0);
        var shrank = before is not null && after is not null && after < before;
        Assert.True(readsZero || shrank, $"discard neither freed space ({before} -> {after} bytes) nor reads back zeroes");
        rig.AssertHealthy();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Write_zeroes_zeroes_the_range_and_nothing_else_5_2_6_2(bool mayUnmap)
    {
        using var rig = Rig();
        var d = rig.Driver;
        var data = Random(64 * 1024, 4);
        await d.WriteAsync(0, data);
        await d.WriteZeroesAsync(8192, 16384, mayUnmap);

        var back = new byte[data.Length];
        await d.ReadAsync(0, back);
        for (var i = 0; i < data.Length; i++)
        {
            var zeroed = i is >= 8192 and < 8192 + 16384;
            if (back[i] != (zeroed ? 0 : data[i]))
                Assert.Fail($"byte {i}: {back[i]}");
        }
        Assert.Equal(back, FileBytes(0, back.Length));
        rig.AssertHealthy();
    }

    [Fact]
    public async Task Get_id_returns_the_serial_5_2_6()
    {
        using var rig = Rig(new BlkDeviceOptions { Serial = "disk-0042" });
        Assert.Equal("disk-0042", await rig.Driver.GetIdAsync());
    }

    [Fact]
    public void An_image_with_a_ragged_tail_exposes_whole_sectors_only_5_2_4()
    {
        var ragged = Path.Combine(_dir, "ragged.img");
        File.WriteAllBytes(ragged, new byte[(1 << 20) + 100]);
        using var backend = FileBackend.Open(ragged);
        Assert.Equal(1UL << 20, backend.Capacity);
        var device = new BlkDevice(backend);
        Assert.Equal((ulong)(1 << 20) / 512, device.Config.Capacity);
    }

    [Fact]
    public void A_missing_image_is_one_clear_error()
    {
        var e = Assert.Throws<FileNotFoundException>(() => FileBackend.Open(Path.Combine(_dir, "nope.img")));
        Assert.Contains("nope.img", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public async Task The_Stream_view_round_trips_unaligned_reads_and_writes()
    {
        using var rig = Rig();
        await using var stream = rig.Driver.AsStream();
        Assert.True(stream.CanRead && stream.CanWrite && stream.CanSeek);
        Assert.Equal((long)DiskSize, stream.Length);

        var model = new byte[64 * 1024];
        var rnd = new Random(5);
        for (var i = 0; i < 40; i++)
        {
            var pos = rnd.Next(model.Length - 5000);
            var len = rnd.Next(1, 5000);
            var chunk = new byte[len];
            rnd.NextBytes(chunk);
            stream.Position = pos;
            await stream.WriteAsync(chunk);
            Assert.Equal(pos + len, stream.Position);
            chunk.CopyTo(model, pos);
        }

        // Read back in odd pieces with the synchronous API as well.
        stream.Seek(0, SeekOrigin.Begin);
        var back = new byte[model.Length];
        var done = 0;
        while (done < back.Length)
        {
            var n = stream.Read(back, done, Math.Min(777, back.Length - done));
            Assert.True(n > 0);
            done += n;
        }
        Assert.Equal(model, back);
        Assert.Equal(model, FileBytes(0, model.Length));

        stream.Seek(-10, SeekOrigin.End);
        Assert.Equal(10, await stream.ReadAsync(new byte[100]));
        Assert.Equal(0, await stream.ReadAsync(new byte[100]));
        stream.Seek(-10, SeekOrigin.End);
        await Assert.ThrowsAsync<IOException>(async () => await stream.WriteAsync(new byte[11]));
        stream.Flush();
        rig.AssertHealthy();
    }

    [Fact]
    public async Task A_read_only_image_refuses_writes_with_IOERR_5_2_6_2()
    {
        var original = Random(4096, 6);
        File.WriteAllBytes(_image, original.Concat(new byte[1 << 20]).ToArray());
        using var rig = new MachineRig(FileBackend.Open(_image, readOnly: true), queueSize: 16);
        Assert.True(rig.Driver.ReadOnly);
        Assert.False(VirtioFeatures.Has(rig.Driver.Features, BlkFeatures.Discard));

        // The driver still sends the write (it is the device's job to refuse it).
        var status = await SubmitRaw(rig, BlkRequestType.Out, 0, new byte[512]);
        Assert.Equal(BlkStatus.IoErr, status);
        Assert.Equal(original, FileBytes(0, 4096));
        var back = new byte[4096];
        await rig.Driver.ReadAsync(0, back);
        Assert.Equal(original, back);
    }

    private static async Task<BlkStatus> SubmitRaw(MachineRig rig, BlkRequestType type, ulong sector, byte[] data)
    {
        var address = rig.Driver.Transport.Allocator.Allocate((ulong)data.Length, 4096);
        data.CopyTo(rig.Driver.Transport.Memory.GetSpan(address, data.Length));
        return await rig.Driver.SubmitDirectAsync(type, sector, address, (uint)data.Length);
    }
}
