namespace VirtioSharp.Tests.Support;

/// <summary>
/// Tests that measure a rate against the wall clock (a limit holds within a few percent, a polling
/// window finds work) run alone, after the parallel ones: on a two-core runner a guest VM or a
/// Ceph cluster of another test class can stall the back-end or the bench for longer than a
/// limit's burst, and the rate then falls short for reasons that are not the code's.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MeasuredAlone
{
    public const string Name = "measured alone";
}
