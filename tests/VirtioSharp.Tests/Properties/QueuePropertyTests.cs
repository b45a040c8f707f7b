using FsCheck;
using FsCheck.Fluent;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Properties;

/// <summary>
/// A random model test of <see cref="Queues.SplitDriverQueue"/> against <see cref="Queues.SplitDeviceQueue"/>
/// over the same ring memory, one thread, random interleavings of the two sides' steps (2.7.13, 2.7.14).
/// <see cref="QueuePair"/> checks after every step that no descriptor is lost, that ids and
/// buffers match, and that no notification or interrupt is lost (2.7.7, 2.7.10).
/// </summary>
public sealed class QueuePropertyTests
{
    public sealed record QueueRun(int Size, bool EventIdx, (RingStep Step, int Arg)[] Steps)
    {
        public override string ToString() =>
            $"size {Size}, event idx {EventIdx}, {Steps.Length} steps: {string.Join(" ", Steps.Select(s => $"{s.Step}({s.Arg})"))}";
    }

    private static readonly Gen<RingStep> Steps = Gen.Frequency(
        (6, Gen.Constant(RingStep.Add)), (3, Gen.Constant(RingStep.Publish)), (5, Gen.Constant(RingStep.Pop)),
        (1, Gen.Constant(RingStep.DeviceSleep)), (4, Gen.Constant(RingStep.Complete)), (2, Gen.Constant(RingStep.PublishUsed)),
        (4, Gen.Constant(RingStep.Take)), (1, Gen.Constant(RingStep.DriverSleep)));

    private static readonly Gen<QueueRun> Runs =
        from sizeLog in Gen.Choose(0, 8)
        from eventIdx in Gen.Elements(false, true)
        from count in Gen.Choose(1, 600)
        from steps in Gen.ArrayOf(Steps.Zip(Gen.Choose(0, 1 << 16)), count)
        select new QueueRun(1 << sizeLog, eventIdx, steps);

    [Fact]
    public void Driver_and_device_halves_agree_under_random_interleavings_2_7_13()
    {
        var property = Prop.ForAll(Arb.From(Runs), run =>
        {
            using var pair = new QueuePair(run.Size, run.EventIdx);
            foreach (var (step, arg) in run.Steps)
                pair.Step(step, arg);
            pair.Drain();
            return pair.Added == pair.Completed;
        });
        Check.One(PropertyConfig.For(400), property);
    }
}
