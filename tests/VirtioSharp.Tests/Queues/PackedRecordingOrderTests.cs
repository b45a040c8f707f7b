using System.Runtime.CompilerServices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Queues;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Queues;

/// <summary>
/// A recording is taken while the other half runs on another thread: each half must record a slot
/// it hands over before the release store that hands it over, or the other half can take (and
/// even reuse) the slot first and the recording tells the story out of order.
/// </summary>
public sealed unsafe class PackedRecordingOrderTests
{
    /// <summary>Checks, at the moment each event is recorded, the flags the other half would see in the ring.</summary>
    private sealed class FlagsAtRecordTime(PackedQueuePair pair) : ITraceSink
    {
        public bool Active => true;
        public int Checked { get; private set; }
        public List<string> Early { get; } = [];

        public void Step(string actor, string text) { }

        public void Event(RingEvent e)
        {
            var wrap = e.WrapCounter == 1;
            switch (e.Kind)
            {
                // 2.8.1: a slot is available when AVAIL equals the wrap counter and USED does not.
                case RingEventKind.DescriptorWrite when e.Reason == "held" || e.Name == "table" && e.Table == 0:
                case RingEventKind.DescriptorFlags:
                    Checked++;
                    if (Flags(e.Index) is var flags && PackedRing.IsAvail(flags, wrap))
                        Early.Add($"{e.Kind} of slot {e.Index} recorded after the device could take it (flags 0x{flags:x4})");
                    break;
                // 2.8.1: a slot is used when AVAIL and USED both equal the wrap counter.
                case RingEventKind.UsedRingWrite:
                    Checked++;
                    if (Flags(e.Index) is var used && PackedRing.IsUsed(used, wrap))
                        Early.Add($"used slot {e.Index} recorded after the driver could take it (flags 0x{used:x4})");
                    break;
            }
        }

        private ushort Flags(int slot)
        {
            Assert.True(pair.Memory.TryTranslate(pair.Driver.DescriptorTable + (ulong)slot * PackedRing.DescriptorSize + 14, 2, out var host));
            return Unsafe.ReadUnaligned<ushort>((void*)host);
        }
    }

    [Theory]
    [InlineData(5, false)]
    [InlineData(5, true)]
    [InlineData(8, true)]
    public void Each_half_records_a_slot_before_it_hands_the_slot_over_2_8_6(int size, bool indirect)
    {
        using var pair = new PackedQueuePair(size, eventIdx: true, indirect);
        var sink = new FlagsAtRecordTime(pair);
        pair.Driver.Record(sink, indirect);
        pair.Device.Record(sink, pair.Driver.DescriptorTable, pair.Driver.DriverArea, pair.Driver.DeviceArea, indirect);
        // Three laps and more of 3-descriptor lists (and of indirect ones), so both counters flip.
        for (var k = 0; k < 4 * size; k++)
        {
            Assert.True(pair.Add(3, 1, indirect && k % 2 == 1));
            pair.Publish();
            pair.Pop();
            pair.Complete(0);
            pair.PublishUsed();
            pair.Take();
        }
        Assert.Empty(sink.Early);
        Assert.True(sink.Checked >= 8 * size, $"only {sink.Checked} events checked");
    }
}
