using VirtioSharp.Diagnostics;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Queues;

/// <summary>
/// The split ring's form of <see cref="PackedRecordingOrderTests"/>: each half records an index
/// move (and the used element it covers) before the release store that hands it over. Recorded
/// after, a polling device could read the available ring before the recording moved its index,
/// and a driver could take a used element, reuse its head for the next request, and have the
/// device's late record of the element counted to that next request.
/// </summary>
public sealed class SplitRecordingOrderTests
{
    /// <summary>Checks, at the moment each event is recorded, the index the other half would read in the ring.</summary>
    private sealed class IndicesAtRecordTime(RingBuilder ring) : ITraceSink
    {
        public bool Active => true;
        public int Checked { get; private set; }
        public List<string> Early { get; } = [];

        public void Step(string actor, string text) { }

        public void Event(RingEvent e)
        {
            switch (e.Kind)
            {
                // 2.7.13.3: the device takes heads below avail idx.
                case RingEventKind.AvailIndex:
                    Checked++;
                    if (ring.AvailIdx != (ushort)e.OldValue)
                        Early.Add($"avail idx {e.OldValue} -> {e.Value} recorded after the device could read {ring.AvailIdx}");
                    break;
                // 2.7.8.2: the driver takes used elements below used idx.
                case RingEventKind.UsedIndex:
                    Checked++;
                    if (ring.UsedIdx != (ushort)e.OldValue)
                        Early.Add($"used idx {e.OldValue} -> {e.Value} recorded after the driver could read {ring.UsedIdx}");
                    break;
                case RingEventKind.UsedRingWrite:
                    Checked++;
                    if ((ring.UsedIdx & (ring.Size - 1)) != e.Index)
                        Early.Add($"used slot {e.Index} recorded after the driver could take it (used idx {ring.UsedIdx})");
                    break;
            }
        }
    }

    [Theory]
    [InlineData(4, false)]
    [InlineData(4, true)]
    [InlineData(8, true)]
    public void Each_half_records_an_index_move_before_it_hands_the_ring_over_2_7_13_3_and_2_7_8_2(int size, bool eventIdx)
    {
        using var pair = new QueuePair(size, eventIdx);
        var sink = new IndicesAtRecordTime(pair.Ring);
        pair.Driver.Record(sink, indirect: false);
        pair.Device.Record(sink, pair.Ring.Desc, pair.Ring.Avail, pair.Ring.Used, indirect: false);
        // Several laps of 3-descriptor chains, so every ring slot is written again.
        for (var k = 0; k < 4 * size; k++)
        {
            Assert.True(pair.Add(3, 1));
            pair.Publish();
            pair.Pop();
            pair.Complete(0);
            pair.PublishUsed();
            pair.Take();
        }
        Assert.Empty(sink.Early);
        Assert.True(sink.Checked >= 3 * 4 * size, $"only {sink.Checked} events checked");
    }
}
