using VirtioSharp.Tests.Vm;

namespace VirtioSharp.Tests.Cli;

/// <summary><c>vblk demo --packed</c>: the seed's story told on a packed ring (2.8), run as the command runs.</summary>
public sealed class DemoPackedTests
{
    private static (int Code, string Output) Demo(params string[] args)
    {
        return Repo.Run("dotnet", [Repo.VblkDll, "demo", .. args], TimeSpan.FromMinutes(2));
    }

    [Fact]
    public void The_first_request_is_narrated_on_a_packed_ring_2_8()
    {
        var (code, output) = Demo("--packed", "--queue-size", "10", "--depth", "3", "--size", "1M", "--block-size", "4K");
        Assert.True(code == 0, output);
        Assert.Contains("VIRTIO_F_RING_PACKED", output);
        Assert.Contains("descriptor ring slot 0: addr", output);
        Assert.Contains("slot 0's flags written last, with release", output);                     // the driver hands the list over
        Assert.Contains("the Device Event Suppression structure", output);                         // consulted before notifying
        Assert.Contains("AVAIL matches the Driver Ring Wrap Counter the device expects (1)", output);
        Assert.Contains("used descriptor written over slot 0: id 0, len 513", output);            // and back
        Assert.Contains("the Driver Event Suppression structure", output);                         // consulted before interrupting
        Assert.Contains("every byte OK", output);
    }

    [Fact]
    public void Trace_all_shows_both_wrap_counters_flipping_2_8_1()
    {
        var (code, output) = Demo("--packed", "--queue-size", "5", "--depth", "1", "--size", "1M", "--block-size", "64K", "--trace", "all");
        Assert.True(code == 0, output);
        Assert.Contains("Driver Ring Wrap Counter flips to 0", output);
        Assert.Contains("Driver Ring Wrap Counter flips to 1", output);
        Assert.Contains("Device Ring Wrap Counter flips to 0", output);
        Assert.Contains("Device Ring Wrap Counter flips to 1", output);
        Assert.Contains("the device now expects Driver Ring Wrap Counter 0", output);
    }

    [Fact]
    public void A_queue_size_out_of_range_is_one_line()
    {
        var (code, output) = Demo("--packed", "--queue-size", "40000");
        Assert.NotEqual(0, code);
        Assert.Contains("--queue-size must be from 4 to 32768", output);
    }
}
